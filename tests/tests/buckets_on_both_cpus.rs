//! A source's bucket holds its rate when its packets arrive on both CPUs at once: the
//! real program, BPF_PROG_TEST_RUN from two threads pinned to different CPUs (a test run
//! executes on the calling CPU), hammering one source for 10 s.
//!
//! Not part of the 6.1 VM run, which boots one CPU.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use sip_filter::{
    settings::{BanRules, RateLimit, RateLimits},
    Filter, Settings,
};
use sip_filter_common::{Method, Reason};
use sip_filter_tests::{packets::*, privileged};

const RATE: u32 = 1000;
const BURST: u32 = 100;
const DURATION: Duration = Duration::from_secs(10);

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "pinning to CPU {cpu}"
        );
    }
}

#[test]
fn one_sources_rate_holds_across_both_cpus() {
    if !privileged("one_sources_rate_holds_across_both_cpus") {
        return;
    }
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs two CPUs, the machine has {cpus}"
    );
    let mut filter = Filter::load().unwrap();
    filter
        .configure(&Settings {
            domains: vec!["pbx.example.test".into()],
            rate_limits: RateLimits {
                register: Some(RateLimit {
                    rate: RATE,
                    burst: BURST,
                }),
                ..RateLimits::none()
            },
            ban: BanRules::off(),
            ..Settings::default()
        })
        .unwrap();
    let filter = Arc::new(filter);
    let frame = Arc::new(udp4(
        SIP_PORT,
        &sip_request("REGISTER", "sip:pbx.example.test", &[]),
    ));
    let before = filter.counters().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|cpu| {
            let (filter, frame, stop) = (filter.clone(), frame.clone(), stop.clone());
            thread::spawn(move || {
                pin_to_cpu(cpu);
                let mut batches = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    filter.run(&frame, BATCH).unwrap();
                    batches.push((start, Instant::now()));
                }
                batches
            })
        })
        .collect();
    thread::sleep(DURATION);
    stop.store(true, Ordering::Relaxed);
    let batches: Vec<Vec<(Instant, Instant)>> =
        workers.into_iter().map(|w| w.join().unwrap()).collect();
    let ended = Instant::now();
    let elapsed = (ended - started).as_secs_f64();
    let offered: Vec<u64> = batches
        .iter()
        .map(|b| b.len() as u64 * u64::from(BATCH))
        .collect();
    let delta = filter.counters().unwrap().since(&before);
    let admitted = delta.packets[Reason::PassRequest as usize][Method::Register as usize];
    let limited = delta.packets[Reason::DropRateLimited as usize][Method::Register as usize];
    // At most the burst and the rate over the whole run (over-admission is what two
    // CPUs sharing one bucket could cause). At least that, less what the bucket could not
    // hold while neither CPU offered: on a busy machine both threads may be descheduled
    // for longer than the bucket takes to fill, and a full bucket earns nothing.
    let most = f64::from(BURST) + f64::from(RATE) * elapsed;
    let idle = idle_beyond(
        batches.concat(),
        (started, ended),
        Duration::from_secs_f64(f64::from(BURST) / f64::from(RATE)),
    );
    let least = most - f64::from(RATE) * idle.as_secs_f64();
    eprintln!(
        "offered {offered:?} from two CPUs over {elapsed:.2} s; admitted {admitted} \
         (at most {most:.0}; at least {least:.0}, both CPUs idle {idle:.2?} past the \
         bucket's fill time), rate-limited {limited}"
    );
    // Each CPU alone offered at least twice the configured rate (the bucket was always
    // contended), even on a busy machine.
    assert!(
        offered
            .iter()
            .all(|n| *n as f64 > 2.0 * f64::from(RATE) * elapsed),
        "both CPUs sent: {offered:?}"
    );
    assert_eq!(
        admitted + limited,
        offered.iter().sum::<u64>(),
        "every request judged once"
    );
    assert!(
        admitted as f64 <= most * 1.10,
        "admitted {admitted}: over the configured rate ({most:.0})"
    );
    assert!(
        admitted as f64 >= least * 0.90,
        "admitted {admitted}: under the configured rate ({least:.0})"
    );
}

/// Test runs a thread asks for at a time: short, so that a thread descheduled between
/// batches shows as a gap.
const BATCH: u32 = 100;

/// How long, in all, neither CPU was offering packets beyond `fill` at a stretch (the
/// bucket full, earning nothing). A batch lasting longer than `fill` may hold such a
/// stretch (a thread descheduled inside the kernel's loop of test runs), so it counts as
/// idle.
fn idle_beyond(
    mut batches: Vec<(Instant, Instant)>,
    (started, ended): (Instant, Instant),
    fill: Duration,
) -> Duration {
    batches.retain(|(start, end)| *end - *start <= fill);
    batches.sort();
    let mut idle = Duration::ZERO;
    let mut covered = started;
    for (start, end) in batches {
        if start > covered {
            idle += (start - covered).saturating_sub(fill);
        }
        covered = covered.max(end);
    }
    idle + (ended.max(covered) - covered).saturating_sub(fill)
}
