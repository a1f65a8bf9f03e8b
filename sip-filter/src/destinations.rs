//! Destination rules and per-account call budgets (`[destinations]`, issue 18): the
//! settings, their validation, and how they are written to the INVITE program's maps.
//!
//! A reload replaces the rules and the budgets' settings and keeps what the kernel
//! learnt: a rule whose prefix stays keeps its number, so its counters and its callers'
//! meters go on; accounts blocked after a breach stay blocked until their block ends.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use aya::maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use sip_filter_common::{
    maps::{
        destination_names as names, CallBudget, CallerKey, Calls, DestinationConfig,
        DestinationCounters, DestinationKey, DestinationRule, RuleCounters, CALL_BUDGETS_ON,
        DESTINATION_ALLOW, DESTINATION_DENY, DESTINATION_LIMIT, DESTINATION_RULES_ON,
        MAX_DESTINATION_RULES,
    },
    sip::dialled::{
        InternationalPrefixes, INTERNATIONAL, MAX_INTERNATIONAL_PREFIXES,
        MAX_INTERNATIONAL_PREFIX_LEN, NUMBER_BYTES,
    },
    sip::pairing::{Account, ACCOUNT_WORDS},
};

use crate::{
    bpf_sys,
    filter::{Filter, FilterError},
};

/// What a rule does to an INVITE dialling a number it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Deny,
    /// New calls per minute, per source and per account.
    Limit {
        calls_per_minute: u32,
    },
    Allow,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Limit { .. } => "limit",
            Action::Allow => "allow",
        }
    }
}

/// A rule: a prefix of the normalised number (`+44`, `+1900`, `0900`) and its action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub action: Action,
}

/// Each account's call budget: new INVITEs per minute and per hour (0: unlimited),
/// and a lower one for international numbers and `limit` rules' prefixes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallBudgets {
    pub per_minute: u32,
    pub per_hour: u32,
    pub limited_per_minute: u32,
    pub limited_per_hour: u32,
    /// How long an account that breached its budget is blocked.
    pub block_seconds: u64,
}

impl CallBudgets {
    pub fn any(&self) -> bool {
        self.per_minute != 0
            || self.per_hour != 0
            || self.limited_per_minute != 0
            || self.limited_per_hour != 0
    }
}

/// The `[destinations]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationSettings {
    /// Digits that start an international call when dialled first (`00`, `011`).
    pub international_prefixes: Vec<String>,
    pub rules: Vec<Rule>,
    pub budgets: CallBudgets,
}

/// The default international prefix (ITU-T E.164's recommended `00`).
pub const DEFAULT_INTERNATIONAL_PREFIXES: [&str; 1] = ["00"];
/// The default block after a breach.
pub const DEFAULT_BLOCK_SECONDS: u64 = 3600;

impl Default for DestinationSettings {
    fn default() -> Self {
        Self {
            international_prefixes: DEFAULT_INTERNATIONAL_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
            rules: Vec::new(),
            budgets: CallBudgets {
                block_seconds: DEFAULT_BLOCK_SECONDS,
                ..CallBudgets::default()
            },
        }
    }
}

/// Checks a rule's prefix: an optional `+` (international), then up to 15 digits;
/// returns it as the kernel's key text.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    let international = digits.len() != text.len();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a prefix: write `+` and a country code for international numbers (\"+44\", \"+1900\"), or the digits dialled for national ones (\"0900\")"
        ));
    }
    if digits.is_empty() && !international {
        return Err("an empty prefix: write \"+\" for every international number".to_string());
    }
    if text.len() > NUMBER_BYTES {
        return Err(format!(
            "{text:?} is longer than the {} digits a number is matched on",
            NUMBER_BYTES - 1
        ));
    }
    Ok(text.to_string())
}

/// Checks an international prefix (`00`, `011`).
pub fn parse_international_prefix(text: &str) -> Result<String, String> {
    if text.is_empty()
        || text.len() > MAX_INTERNATIONAL_PREFIX_LEN
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{text:?} is not an international prefix: 1 to {MAX_INTERNATIONAL_PREFIX_LEN} digits, like \"00\" or \"011\""
        ));
    }
    Ok(text.to_string())
}

/// At most this many international prefixes.
pub const MAX_PREFIXES: usize = MAX_INTERNATIONAL_PREFIXES;

/// The rules' key for a prefix: its bytes, and its length in bits.
fn key_of(prefix: &str) -> Key<DestinationKey> {
    let mut key = [0u8; NUMBER_BYTES];
    let bytes = prefix.as_bytes();
    let len = bytes.len().min(NUMBER_BYTES);
    key[..len].copy_from_slice(&bytes[..len]);
    Key::new((len * 8) as u32, key)
}

/// The prefix a key holds.
fn prefix_of(key: &Key<DestinationKey>) -> String {
    let len = (key.prefix_len() as usize / 8).min(NUMBER_BYTES);
    String::from_utf8_lossy(&key.data()[..len]).into_owned()
}

/// The kernel's setting of a rule.
fn kernel_rule(action: Action, id: u32) -> DestinationRule {
    let (action, per_minute) = match action {
        Action::Deny => (DESTINATION_DENY, 0),
        Action::Limit { calls_per_minute } => (DESTINATION_LIMIT, calls_per_minute),
        Action::Allow => (DESTINATION_ALLOW, 0),
    };
    DestinationRule {
        action,
        id,
        per_minute,
        _pad: 0,
    }
}

fn map_error(name: &'static str) -> impl Fn(MapError) -> FilterError {
    move |source| FilterError::Map { name, source }
}

/// Every account's call budget, blocked or only metering, by account key (batched
/// reads): the report's and the state file's.
pub fn all_call_budgets(map: &Map) -> Result<Vec<(u64, CallBudget)>, FilterError> {
    bpf_sys::hash_entries(map).map_err(map_error(names::BUDGETS))
}

/// The rules the kernel holds: prefix, and its rule.
pub fn loaded_rules(filter: &Filter) -> Result<BTreeMap<String, DestinationRule>, FilterError> {
    let trie: LpmTrie<_, DestinationKey, DestinationRule> =
        LpmTrie::try_from(filter.map(names::RULES)?).map_err(map_error(names::RULES))?;
    let mut rules = BTreeMap::new();
    for entry in trie.iter() {
        let (key, rule) = entry.map_err(map_error(names::RULES))?;
        rules.insert(prefix_of(&key), rule);
    }
    Ok(rules)
}

/// Writes `settings` (none: rules and budgets off) to the INVITE program's maps,
/// keeping each kept prefix's number (see the module).
pub fn apply(
    filter: &mut Filter,
    settings: Option<&DestinationSettings>,
) -> Result<(), FilterError> {
    let loaded = loaded_rules(filter)?;
    let empty = DestinationSettings::default();
    let settings = settings.unwrap_or(&empty);
    let wanted: BTreeSet<&str> = settings.rules.iter().map(|r| r.prefix.as_str()).collect();
    let mut free: Vec<u32> = {
        let used: BTreeSet<u32> = loaded
            .iter()
            .filter(|(prefix, _)| wanted.contains(prefix.as_str()))
            .map(|(_, rule)| rule.id)
            .collect();
        (0..MAX_DESTINATION_RULES)
            .rev()
            .filter(|id| !used.contains(id))
            .collect()
    };
    let mut fresh_ids = Vec::new();
    let mut written = Vec::new();
    for rule in &settings.rules {
        let id = match loaded.get(&rule.prefix) {
            Some(kept) => kept.id,
            None => {
                let id = free.pop().ok_or(FilterError::Map {
                    name: names::RULES,
                    source: MapError::InvalidName {
                        name: format!("more than {MAX_DESTINATION_RULES} destination rules"),
                    },
                })?;
                fresh_ids.push(id);
                id
            }
        };
        written.push((key_of(&rule.prefix), kernel_rule(rule.action, id)));
    }
    // A new rule's counters start at zero (its number may be a removed rule's).
    {
        let mut counters: PerCpuArray<_, RuleCounters> =
            PerCpuArray::try_from(filter.map_mut(names::RULE_COUNTERS)?)
                .map_err(map_error(names::RULE_COUNTERS))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| FilterError::Map {
            name: names::RULE_COUNTERS,
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "nr_cpus",
                io_error: e,
            }),
        })?;
        for id in &fresh_ids {
            let zeros =
                PerCpuValues::try_from(vec![RuleCounters::default(); cpus]).map_err(|e| {
                    FilterError::Map {
                        name: names::RULE_COUNTERS,
                        source: MapError::SyscallError(aya::sys::SyscallError {
                            call: "per-cpu values",
                            io_error: e,
                        }),
                    }
                })?;
            counters
                .set(*id, zeros, 0)
                .map_err(map_error(names::RULE_COUNTERS))?;
        }
    }
    // Nor does it inherit a removed rule's callers (their meters and report rows).
    if !fresh_ids.is_empty() {
        let fresh: BTreeSet<u32> = fresh_ids.iter().copied().collect();
        let stale: Vec<CallerKey> =
            bpf_sys::hash_entries::<CallerKey, Calls>(filter.map(names::CALLERS)?)
                .map_err(map_error(names::CALLERS))?
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| fresh.contains(&key.rule))
                .collect();
        let mut callers: aya::maps::HashMap<_, CallerKey, Calls> =
            aya::maps::HashMap::try_from(filter.map_mut(names::CALLERS)?)
                .map_err(map_error(names::CALLERS))?;
        for key in &stale {
            // Gone already (pushed out of the LRU meanwhile): nothing to do.
            let _ = callers.remove(key);
        }
    }
    {
        let mut trie: LpmTrie<_, DestinationKey, DestinationRule> =
            LpmTrie::try_from(filter.map_mut(names::RULES)?).map_err(map_error(names::RULES))?;
        for (key, rule) in &written {
            trie.insert(key, rule, 0).map_err(map_error(names::RULES))?;
        }
        for prefix in loaded.keys() {
            if !wanted.contains(prefix.as_str()) {
                trie.remove(&key_of(prefix))
                    .map_err(map_error(names::RULES))?;
            }
        }
    }
    let prefixes: Vec<&str> = settings
        .international_prefixes
        .iter()
        .map(String::as_str)
        .collect();
    let budgets = &settings.budgets;
    let mut flags = 0;
    if !settings.rules.is_empty() {
        flags |= DESTINATION_RULES_ON;
    }
    if budgets.any() {
        flags |= CALL_BUDGETS_ON;
    }
    let config = DestinationConfig {
        flags,
        _pad: 0,
        international: InternationalPrefixes::new(&prefixes),
        per_minute: budgets.per_minute,
        per_hour: budgets.per_hour,
        limited_per_minute: budgets.limited_per_minute,
        limited_per_hour: budgets.limited_per_hour,
        block_ns: budgets.block_seconds.saturating_mul(1_000_000_000),
    };
    let mut array: Array<_, DestinationConfig> =
        Array::try_from(filter.map_mut(names::CONFIG)?).map_err(map_error(names::CONFIG))?;
    array.set(0, config, 0).map_err(map_error(names::CONFIG))?;
    if !budgets.any() {
        // Budgets off: the kernel ignores the blocks already; freed, they no longer show
        // in `top` and the metrics, nor come back with budgets on again.
        let freed = forget_call_budgets(filter)?;
        if freed != 0 {
            log::info!(accounts = freed;
                "call budgets are off: {freed} account(s) metered or blocked by them forgotten");
        }
    }
    Ok(())
}

/// Whether the filter's configuration has call budgets on.
pub fn budgets_on(filter: &Filter) -> Result<bool, FilterError> {
    let array: Array<_, DestinationConfig> =
        Array::try_from(filter.map(names::CONFIG)?).map_err(map_error(names::CONFIG))?;
    let config = array.get(&0, 0).map_err(map_error(names::CONFIG))?;
    Ok(config.has(CALL_BUDGETS_ON))
}

/// Removes every account's call budget (its meter, and its block if blocked); returns
/// how many there were.
fn forget_call_budgets(filter: &mut Filter) -> Result<usize, FilterError> {
    let map = filter.map(names::BUDGETS)?;
    let keys: Vec<u64> = all_call_budgets(map)?
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    let data = bpf_sys::hash_or_trie(map).ok_or(FilterError::Map {
        name: names::BUDGETS,
        source: MapError::InvalidName {
            name: names::BUDGETS.to_string(),
        },
    })?;
    bpf_sys::delete_many(data, &keys).map_err(map_error(names::BUDGETS))
}

/// Whether a key text is an international number's.
pub fn is_international(prefix: &str) -> bool {
    prefix.as_bytes().first() == Some(&INTERNATIONAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked() {
        assert_eq!(parse_prefix("+44").as_deref(), Ok("+44"));
        assert_eq!(parse_prefix("+").as_deref(), Ok("+"));
        assert_eq!(parse_prefix("0900").as_deref(), Ok("0900"));
        assert!(parse_prefix("").is_err());
        assert!(parse_prefix("+4 4").is_err());
        assert!(parse_prefix("44+").is_err());
        assert!(parse_prefix("+1234567890123456").is_err());
        assert!(parse_prefix("+123456789012345").is_ok());
        assert!(parse_international_prefix("00").is_ok());
        assert!(parse_international_prefix("011").is_ok());
        assert!(parse_international_prefix("").is_err());
        assert!(parse_international_prefix("00000").is_err());
        assert!(parse_international_prefix("+").is_err());
    }

    #[test]
    fn keys_round_trip() {
        for prefix in ["+", "+44", "0900", "+123456789012345"] {
            let key = key_of(prefix);
            assert_eq!(key.prefix_len(), prefix.len() as u32 * 8);
            assert_eq!(prefix_of(&key), prefix);
        }
    }
}

/// One rule as the kernel holds it, with its counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleReport {
    pub prefix: String,
    pub rule: DestinationRule,
    /// INVITEs that dialled a number under the rule, and of those dropped by it.
    pub calls: u64,
    pub dropped: u64,
}

impl RuleReport {
    /// The action's name (`deny`, `limit`, `allow`).
    pub fn action(&self) -> &'static str {
        match self.rule.action {
            DESTINATION_DENY => "deny",
            DESTINATION_LIMIT => "limit",
            _ => "allow",
        }
    }
}

/// An account blocked after breaching its call budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedAccount {
    pub account: String,
    pub until_ns: u64,
    pub breaches: u32,
    pub drops: u32,
}

/// What the INVITE program counted and learnt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationReport {
    pub counters: DestinationCounters,
    pub rules: Vec<RuleReport>,
    /// Calls per rule and caller (a source or an account).
    pub callers: Vec<(CallerKey, Calls)>,
    /// Accounts blocked at the time of reading.
    pub blocked: Vec<BlockedAccount>,
}

/// An account's name as the kernel kept it.
pub fn account_text(name: &[u64; ACCOUNT_WORDS]) -> String {
    let (bytes, len) = Account::name_bytes(name);
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

/// A source's address as [`Calls::name`] keeps it.
pub fn source_text(name: &[u64; ACCOUNT_WORDS]) -> String {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(name) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let v6 = std::net::Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => v6.to_string(),
    }
}

fn sum_per_cpu<T: aya::Pod + Default>(
    map: &Map,
    name: &'static str,
    index: u32,
    add: impl Fn(&mut T, &T),
) -> Result<T, FilterError> {
    let array: PerCpuArray<&MapData, T> = PerCpuArray::try_from(map).map_err(map_error(name))?;
    let values = array.get(&index, 0).map_err(map_error(name))?;
    let mut sum = T::default();
    for value in values.iter() {
        add(&mut sum, value);
    }
    Ok(sum)
}

impl DestinationReport {
    /// Reads the maps of `maps(name)` (a loaded filter's, or pinned ones) at `now_ns`
    /// (`CLOCK_MONOTONIC_COARSE`).
    pub fn read<'a>(
        maps: impl Fn(&'static str) -> Result<&'a Map, FilterError>,
        now_ns: u64,
    ) -> Result<DestinationReport, FilterError> {
        let counters = sum_per_cpu(
            maps(names::COUNTERS)?,
            names::COUNTERS,
            0,
            |sum: &mut DestinationCounters, cpu| {
                sum.invites += cpu.invites;
                for (total, kind) in sum.dialled.iter_mut().zip(cpu.dialled) {
                    *total += kind;
                }
                sum.unmatched += cpu.unmatched;
                sum.budget_breaches += cpu.budget_breaches;
                sum.no_account += cpu.no_account;
                sum.from_accounts += cpu.from_accounts;
                sum.repeats += cpu.repeats;
            },
        )?;
        let mut rules = Vec::new();
        for (key, rule) in
            bpf_sys::trie_entries::<DestinationKey, DestinationRule>(maps(names::RULES)?)
                .map_err(map_error(names::RULES))?
        {
            let counts = sum_per_cpu(
                maps(names::RULE_COUNTERS)?,
                names::RULE_COUNTERS,
                rule.id,
                |sum: &mut RuleCounters, cpu| {
                    sum.calls += cpu.calls;
                    sum.dropped += cpu.dropped;
                },
            )?;
            rules.push(RuleReport {
                prefix: prefix_of(&key),
                rule,
                calls: counts.calls,
                dropped: counts.dropped,
            });
        }
        rules.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        let callers = bpf_sys::hash_entries::<CallerKey, Calls>(maps(names::CALLERS)?)
            .map_err(map_error(names::CALLERS))?;
        let blocked = all_call_budgets(maps(names::BUDGETS)?)?
            .into_iter()
            .filter(|(_, budget)| now_ns < budget.blocked_until_ns)
            .map(|(_, budget)| BlockedAccount {
                account: account_text(&budget.name),
                until_ns: budget.blocked_until_ns,
                breaches: budget.breaches,
                drops: budget.drops,
            })
            .collect();
        Ok(DestinationReport {
            counters,
            rules,
            callers,
            blocked,
        })
    }

    /// Reads the maps a running filter pinned in `dir`.
    pub fn read_pinned(dir: &Path, now_ns: u64) -> Result<DestinationReport, FilterError> {
        let mut opened: BTreeMap<&'static str, Map> = BTreeMap::new();
        for name in names::PINNED {
            let data = MapData::from_pin(dir.join(name)).map_err(map_error(name))?;
            opened.insert(name, Map::from_map_data(data).map_err(map_error(name))?);
        }
        Self::read(
            |name| {
                opened
                    .get(name)
                    .ok_or(FilterError::Missing { what: "map", name })
            },
            now_ns,
        )
    }
}
