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
                let mut runs = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    filter.run(&frame, 1000).unwrap();
                    runs += 1000;
                }
                runs
            })
        })
        .collect();
    thread::sleep(DURATION);
    stop.store(true, Ordering::Relaxed);
    let offered: Vec<u64> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let delta = filter.counters().unwrap().since(&before);
    let admitted = delta.packets[Reason::PassRequest as usize][Method::Register as usize];
    let limited = delta.packets[Reason::DropRateLimited as usize][Method::Register as usize];
    let expected = f64::from(BURST) + f64::from(RATE) * elapsed;
    let error = (admitted as f64 - expected) / expected;
    eprintln!(
        "offered {offered:?} from two CPUs over {elapsed:.2} s; admitted {admitted}, expected {expected:.0} ({:+.2}%), rate-limited {limited}",
        error * 100.0
    );
    assert!(
        offered.iter().all(|n| *n > 100_000),
        "both CPUs sent: {offered:?}"
    );
    assert_eq!(
        admitted + limited,
        offered.iter().sum::<u64>(),
        "every request judged once"
    );
    assert!(
        error.abs() <= 0.10,
        "admitted {admitted} is {:+.1}% off the configured rate ({expected:.0})",
        error * 100.0
    );
}
