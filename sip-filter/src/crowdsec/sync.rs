//! The bouncer's engine: CrowdSec's decisions made into deny-list entries, and kept so.
//!
//! Where decisions go: the deny tries (`SF_DENY_V4`, `SF_DENY_V6`), as entries of origin
//! [`LIST_ORIGIN_CROWDSEC`]. An `Ip` decision is a /32 or /128, a `Range` its prefix:
//! the tries hold both alike, with an expiry and a drop count, and their origin field
//! says whose an entry is. The bans hash map would widen an IPv6 `Ip` to the filter's
//! /64 and has no origin, and it is where the filter's own bans live (the ones the
//! signal source pushes): keeping CrowdSec's apart means they are never pushed back.
//!
//! Whose entry wins: an entry the configuration or an operator put on the same network
//! stays as it is (CrowdSec neither replaces nor removes it); only entries of origin
//! crowdsec are added, renewed and removed here. The allow list is checked first by the
//! kernel, so nothing from CrowdSec can deny a trusted source.
//!
//! Deltas add and remove; a full pull ([`Bouncer::resync`]) makes the kernel's crowdsec
//! entries exactly the LAPI's set, which repairs a delta 1.4.6 missed and removes what
//! was deleted while the LAPI was away.

use std::collections::BTreeMap;

use ipnet::IpNet;
use sip_filter_common::maps::{BanReason, ListEntry, LIST_ORIGIN_CROWDSEC};

use super::decisions::{network_of, Decision, DecisionFilter, DecisionStream, Verdict};
use crate::{filter::FilterError, lists::PinnedList};

/// An entry is rewritten only when its expiry moved by more than this: CrowdSec counts
/// durations down, so each full pull's remaining times differ by the pull's latency.
const RENEW_SLACK_NS: u64 = 5_000_000_000;

/// The deny list as the engine sees it: the kernel's tries, or a map in unit tests.
pub trait DenyList {
    fn entries(&self) -> Result<Vec<(IpNet, ListEntry)>, FilterError>;
    fn get(&self, net: IpNet) -> Result<Option<ListEntry>, FilterError>;
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), FilterError>;
    fn remove(&mut self, net: IpNet) -> Result<bool, FilterError>;
}

impl DenyList for PinnedList {
    fn entries(&self) -> Result<Vec<(IpNet, ListEntry)>, FilterError> {
        PinnedList::entries(self)
    }
    fn get(&self, net: IpNet) -> Result<Option<ListEntry>, FilterError> {
        PinnedList::get(self, net)
    }
    fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), FilterError> {
        PinnedList::insert(self, net, entry)
    }
    fn remove(&mut self, net: IpNet) -> Result<bool, FilterError> {
        PinnedList::remove(self, net)
    }
}

/// A decision the bouncer has in the kernel: what `block list` shows beside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    pub id: i64,
    pub scenario: String,
    pub origin: String,
    /// On the kernel's clock (`CLOCK_MONOTONIC_COARSE` ns).
    pub expires_ns: u64,
}

/// What one pull changed: for the log and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// New entries written, by the decision's origin.
    pub added: BTreeMap<String, u64>,
    /// Entries whose expiry or decision changed.
    pub renewed: u64,
    pub removed: u64,
    /// Decisions left alone, by (decision type, why: see [`Verdict::Ignore`]).
    pub ignored: BTreeMap<(String, &'static str), u64>,
    /// Decisions on a network the configuration or an operator already lists.
    pub left_to_others: u64,
    /// Kernel writes that failed (a full trie): the first error says why.
    pub failed: u64,
    pub first_failure: Option<String>,
}

impl Tally {
    pub fn added_total(&self) -> u64 {
        self.added.values().sum()
    }

    pub fn changed(&self) -> bool {
        self.added_total() + self.renewed + self.removed > 0
    }

    fn ignore(&mut self, decision: &Decision, why: &'static str) {
        *self
            .ignored
            .entry((decision.kind.to_ascii_lowercase(), why))
            .or_default() += 1;
    }

    fn fail(&mut self, e: FilterError) {
        self.failed += 1;
        self.first_failure.get_or_insert_with(|| e.to_string());
    }
}

pub struct Bouncer<L: DenyList> {
    list: L,
    filter: DecisionFilter,
    /// The decisions in the kernel, by network.
    applied: BTreeMap<IpNet, Applied>,
}

impl<L: DenyList> Bouncer<L> {
    pub fn new(list: L, filter: DecisionFilter) -> Self {
        Self {
            list,
            filter,
            applied: BTreeMap::new(),
        }
    }

    pub fn applied(&self) -> &BTreeMap<IpNet, Applied> {
        &self.applied
    }

    pub fn list(&self) -> &L {
        &self.list
    }

    /// Applies a delta: deletions first (as the LAPI means them), then new decisions.
    /// Repeated entries (1.4.6 sends deletions again) change nothing.
    pub fn apply_delta(&mut self, stream: &DecisionStream, now_ns: u64) -> Tally {
        let mut tally = Tally::default();
        for decision in &stream.deleted {
            let Some(net) = network_of(decision) else {
                continue;
            };
            // Only the decision that put the entry there removes it: a deletion of an
            // older, shorter one on the same network leaves the newer one.
            if self
                .applied
                .get(&net)
                .is_some_and(|applied| applied.id == decision.id)
            {
                self.applied.remove(&net);
                match self.remove_own(net) {
                    Ok(true) => tally.removed += 1,
                    Ok(false) => {}
                    Err(e) => tally.fail(e),
                }
            }
        }
        for decision in &stream.new {
            match self.filter.judge(decision) {
                Verdict::Ignore(why) => tally.ignore(decision, why),
                Verdict::Apply { net, left } => {
                    let expires_ns = expiry(now_ns, left);
                    match self.list.get(net) {
                        Ok(current) => self.enforce(net, current, decision, expires_ns, &mut tally),
                        Err(e) => tally.fail(e),
                    }
                }
            }
        }
        self.forget_expired(now_ns);
        tally
    }

    /// Applies a full pull: afterwards the kernel's crowdsec entries are exactly the
    /// decisions in `stream.new` that pass the filters. On an error reading the tries
    /// nothing is changed.
    pub fn resync(&mut self, stream: &DecisionStream, now_ns: u64) -> Result<Tally, FilterError> {
        let mut tally = Tally::default();
        // The longest decision per network, as the LAPI itself keeps it.
        let mut wanted: BTreeMap<IpNet, (&Decision, u64)> = BTreeMap::new();
        for decision in &stream.new {
            match self.filter.judge(decision) {
                Verdict::Ignore(why) => tally.ignore(decision, why),
                Verdict::Apply { net, left } => {
                    let expires_ns = expiry(now_ns, left);
                    let slot = wanted.entry(net).or_insert((decision, expires_ns));
                    if expires_ns > slot.1 {
                        *slot = (decision, expires_ns);
                    }
                }
            }
        }
        let current: BTreeMap<IpNet, ListEntry> = self.list.entries()?.into_iter().collect();
        for (net, entry) in &current {
            if entry.origin == LIST_ORIGIN_CROWDSEC && !wanted.contains_key(net) {
                match self.list.remove(*net) {
                    Ok(true) => tally.removed += 1,
                    Ok(false) => {}
                    Err(e) => tally.fail(e),
                }
            }
        }
        self.applied.retain(|net, _| wanted.contains_key(net));
        for (net, (decision, expires_ns)) in wanted {
            self.enforce(
                net,
                current.get(&net).copied(),
                decision,
                expires_ns,
                &mut tally,
            );
        }
        Ok(tally)
    }

    /// Puts `decision` on `net` unless the configuration or an operator has it.
    fn enforce(
        &mut self,
        net: IpNet,
        current: Option<ListEntry>,
        decision: &Decision,
        expires_ns: u64,
        tally: &mut Tally,
    ) {
        let drops = match current {
            Some(entry) if entry.origin != LIST_ORIGIN_CROWDSEC => {
                tally.left_to_others += 1;
                self.applied.remove(&net);
                return;
            }
            Some(entry) => {
                let same_decision = self
                    .applied
                    .get(&net)
                    .is_some_and(|applied| applied.id == decision.id);
                if same_decision && entry.expires_ns.abs_diff(expires_ns) <= RENEW_SLACK_NS {
                    return;
                }
                Some(entry.drops)
            }
            None => None,
        };
        let entry = ListEntry {
            expires_ns,
            origin: LIST_ORIGIN_CROWDSEC,
            reason: BanReason::Feed as u32,
            // An entry renewed keeps its count (`sip-filter top`).
            drops: drops.unwrap_or(0),
        };
        if let Err(e) = self.list.insert(net, entry) {
            tally.fail(e);
            return;
        }
        match drops {
            Some(_) => tally.renewed += 1,
            None => *tally.added.entry(decision.origin.clone()).or_default() += 1,
        }
        self.applied.insert(
            net,
            Applied {
                id: decision.id,
                scenario: decision.scenario.clone(),
                origin: decision.origin.clone(),
                expires_ns,
            },
        );
    }

    /// Removes the entry on `net` if it is CrowdSec's.
    fn remove_own(&mut self, net: IpNet) -> Result<bool, FilterError> {
        match self.list.get(net)? {
            Some(entry) if entry.origin == LIST_ORIGIN_CROWDSEC => self.list.remove(net),
            _ => Ok(false),
        }
    }

    /// Expired decisions no longer match in the kernel (the daemon's sweep removes
    /// them): they are forgotten here too.
    fn forget_expired(&mut self, now_ns: u64) {
        self.applied
            .retain(|_, applied| applied.expires_ns > now_ns);
    }
}

fn expiry(now_ns: u64, left: std::time::Duration) -> u64 {
    now_ns
        .saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX))
        .min(u64::MAX - 1)
}

#[cfg(test)]
mod tests {
    use sip_filter_common::maps::{LIST_ORIGIN_CONFIG, LIST_ORIGIN_OPERATOR};

    use super::*;

    const NOW: u64 = 1_000_000_000_000;
    const SECOND: u64 = 1_000_000_000;

    /// The deny list as a map: what the kernel's tries hold, exactly.
    #[derive(Default)]
    struct MapList(BTreeMap<IpNet, ListEntry>);

    impl DenyList for MapList {
        fn entries(&self) -> Result<Vec<(IpNet, ListEntry)>, FilterError> {
            Ok(self.0.iter().map(|(n, e)| (*n, *e)).collect())
        }
        fn get(&self, net: IpNet) -> Result<Option<ListEntry>, FilterError> {
            Ok(self.0.get(&net).copied())
        }
        fn insert(&mut self, net: IpNet, entry: ListEntry) -> Result<(), FilterError> {
            self.0.insert(net, entry);
            Ok(())
        }
        fn remove(&mut self, net: IpNet) -> Result<bool, FilterError> {
            Ok(self.0.remove(&net).is_some())
        }
    }

    fn filter() -> DecisionFilter {
        DecisionFilter {
            scopes: vec!["ip".into(), "range".into()],
            origins: Vec::new(),
            scenarios_containing: Vec::new(),
            scenarios_not_containing: Vec::new(),
        }
    }

    fn ban(id: i64, scope: &str, value: &str, duration: &str) -> Decision {
        Decision {
            id,
            origin: "cscli".into(),
            kind: "ban".into(),
            scope: scope.into(),
            value: value.into(),
            duration: duration.into(),
            scenario: format!("scenario-{id}"),
        }
    }

    fn stream(new: Vec<Decision>, deleted: Vec<Decision>) -> DecisionStream {
        DecisionStream { new, deleted }
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn bouncer_with(entries: &[(&str, ListEntry)]) -> Bouncer<MapList> {
        let list = MapList(entries.iter().map(|(n, e)| (net(n), *e)).collect());
        Bouncer::new(list, filter())
    }

    fn crowdsec_nets(bouncer: &Bouncer<MapList>) -> Vec<String> {
        bouncer
            .list()
            .0
            .iter()
            .filter(|(_, e)| e.origin == LIST_ORIGIN_CROWDSEC)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    #[test]
    fn deltas_add_and_remove_ips_and_ranges_of_both_families() {
        let mut bouncer = bouncer_with(&[]);
        let new = vec![
            ban(1, "Ip", "203.0.113.7", "4h"),
            ban(2, "Range", "198.51.100.0/24", "1h"),
            ban(3, "Ip", "2001:db8::7", "1h"),
            ban(4, "Range", "2001:db8:1::/48", "1h"),
        ];
        let tally = bouncer.apply_delta(&stream(new.clone(), vec![]), NOW);
        assert_eq!(tally.added_total(), 4);
        assert_eq!(
            crowdsec_nets(&bouncer),
            [
                "198.51.100.0/24",
                "203.0.113.7/32",
                "2001:db8::7/128",
                "2001:db8:1::/48"
            ]
        );
        let entry = bouncer.list().0[&net("203.0.113.7/32")];
        assert_eq!(entry.expires_ns, NOW + 4 * 3600 * SECOND);
        assert_eq!(entry.reason, BanReason::Feed as u32);
        assert_eq!(
            bouncer.applied()[&net("203.0.113.7/32")].scenario,
            "scenario-1"
        );

        // The same delta again (1.4.6 repeats): nothing changes.
        let again = bouncer.apply_delta(&stream(new.clone(), vec![]), NOW);
        assert!(!again.changed(), "{again:?}");

        let gone = bouncer.apply_delta(&stream(vec![], vec![new[0].clone(), new[3].clone()]), NOW);
        assert_eq!(gone.removed, 2);
        assert_eq!(
            crowdsec_nets(&bouncer),
            ["198.51.100.0/24", "2001:db8::7/128"]
        );
        // A deletion repeated in the next delta is harmless.
        let repeated = bouncer.apply_delta(&stream(vec![], vec![new[0].clone()]), NOW);
        assert_eq!(repeated.removed, 0);
    }

    #[test]
    fn a_deletion_of_an_older_decision_leaves_the_newer_one() {
        let mut bouncer = bouncer_with(&[]);
        bouncer.apply_delta(&stream(vec![ban(1, "Ip", "192.0.2.1", "1h")], vec![]), NOW);
        // A longer decision on the same address replaces it, then the old one expires.
        let longer =
            bouncer.apply_delta(&stream(vec![ban(2, "Ip", "192.0.2.1", "4h")], vec![]), NOW);
        assert_eq!(longer.renewed, 1);
        let tally =
            bouncer.apply_delta(&stream(vec![], vec![ban(1, "Ip", "192.0.2.1", "-1s")]), NOW);
        assert_eq!(tally.removed, 0);
        assert_eq!(crowdsec_nets(&bouncer), ["192.0.2.1/32"]);
    }

    #[test]
    fn operator_and_config_entries_are_never_replaced_nor_removed() {
        let operator = ListEntry::from_operator(u64::MAX, BanReason::Manual as u32);
        let config = ListEntry::from_config();
        let mut bouncer = bouncer_with(&[("192.0.2.1/32", operator), ("198.51.100.0/24", config)]);
        let decisions = vec![
            ban(1, "Ip", "192.0.2.1", "1h"),
            ban(2, "Range", "198.51.100.0/24", "1h"),
        ];
        let tally = bouncer.apply_delta(&stream(decisions.clone(), vec![]), NOW);
        assert_eq!((tally.added_total(), tally.left_to_others), (0, 2));
        let tally = bouncer.apply_delta(&stream(vec![], decisions.clone()), NOW);
        assert_eq!(tally.removed, 0);
        let tally = bouncer.resync(&stream(vec![], vec![]), NOW).unwrap();
        assert_eq!(tally.removed, 0);
        assert_eq!(
            bouncer.list().0[&net("192.0.2.1/32")].origin,
            LIST_ORIGIN_OPERATOR
        );
        assert_eq!(
            bouncer.list().0[&net("198.51.100.0/24")].origin,
            LIST_ORIGIN_CONFIG
        );
    }

    #[test]
    fn a_resync_repairs_missed_deltas_and_keeps_drop_counts() {
        let mut bouncer = bouncer_with(&[]);
        bouncer.apply_delta(
            &stream(
                vec![
                    ban(1, "Ip", "192.0.2.1", "1h"),
                    ban(2, "Ip", "192.0.2.2", "1h"),
                ],
                vec![],
            ),
            NOW,
        );
        bouncer.list.0.get_mut(&net("192.0.2.1/32")).unwrap().drops = 42;
        // A delta missed: 192.0.2.2 was deleted and 192.0.2.3 added meanwhile.
        let full = stream(
            vec![
                ban(1, "Ip", "192.0.2.1", "1h"),
                ban(3, "Ip", "192.0.2.3", "1h"),
            ],
            vec![],
        );
        let later = NOW + SECOND;
        let tally = bouncer.resync(&full, later).unwrap();
        assert_eq!(
            (tally.added_total(), tally.removed, tally.renewed),
            (1, 1, 0)
        );
        assert_eq!(crowdsec_nets(&bouncer), ["192.0.2.1/32", "192.0.2.3/32"]);
        assert_eq!(bouncer.list().0[&net("192.0.2.1/32")].drops, 42);
        // The same set later on, counted down: within the slack, nothing is rewritten.
        let tally = bouncer.resync(&full, later + 2 * SECOND).unwrap();
        assert!(!tally.changed(), "{tally:?}");
        // An entry an operator's `block del` removed comes back.
        bouncer.list.0.remove(&net("192.0.2.3/32"));
        let tally = bouncer.resync(&full, later).unwrap();
        assert_eq!(tally.added_total(), 1);
    }

    #[test]
    fn a_resync_after_a_restart_adopts_or_removes_what_the_kernel_holds() {
        // Entries of origin crowdsec the bouncer does not know (a restart).
        let left = ListEntry {
            expires_ns: NOW + 60 * SECOND,
            origin: LIST_ORIGIN_CROWDSEC,
            reason: BanReason::Feed as u32,
            drops: 7,
        };
        let mut bouncer = bouncer_with(&[("192.0.2.1/32", left), ("192.0.2.9/32", left)]);
        let full = stream(vec![ban(1, "Ip", "192.0.2.1", "1h")], vec![]);
        let tally = bouncer.resync(&full, NOW).unwrap();
        assert_eq!((tally.renewed, tally.removed), (1, 1));
        assert_eq!(crowdsec_nets(&bouncer), ["192.0.2.1/32"]);
        assert_eq!(bouncer.list().0[&net("192.0.2.1/32")].drops, 7);
    }

    #[test]
    fn ignored_decisions_are_counted_by_type_and_reason() {
        let mut bouncer = bouncer_with(&[]);
        let mut captcha = ban(1, "Ip", "192.0.2.1", "1h");
        captcha.kind = "captcha".into();
        let new = vec![
            captcha,
            ban(2, "Country", "FR", "1h"),
            ban(3, "Ip", "garbage", "1h"),
            ban(4, "Ip", "192.0.2.4", "-1s"),
        ];
        let tally = bouncer.apply_delta(&stream(new, vec![]), NOW);
        assert_eq!(tally.added_total(), 0);
        let ignored: Vec<(&str, &str, u64)> = tally
            .ignored
            .iter()
            .map(|((kind, why), n)| (kind.as_str(), *why, *n))
            .collect();
        assert_eq!(
            ignored,
            [
                ("ban", "expired", 1),
                ("ban", "invalid", 1),
                ("ban", "scope", 1),
                ("captcha", "type", 1)
            ]
        );
    }

    #[test]
    fn ten_thousand_decisions_in_one_pull() {
        let mut bouncer = bouncer_with(&[]);
        let new: Vec<Decision> = (0..10_000)
            .map(|i| ban(i, "Ip", &format!("10.{}.{}.1", i / 256, i % 256), "4h"))
            .collect();
        let full = stream(new, vec![]);
        let tally = bouncer.resync(&full, NOW).unwrap();
        assert_eq!(tally.added_total(), 10_000);
        assert_eq!(bouncer.applied().len(), 10_000);
    }
}
