//! Loaded filters, reused by the tests of one test binary. A load runs the kernel's
//! verifier over every program: seconds here, half a minute under the 6.1 VM's
//! emulation, and most of a BPF table's time. A table needs the programs, not a new
//! verification: a test takes a filter from here with its maps as a fresh load leaves
//! them ([`Filter::clear_maps`]) and gives it back when done, unless it failed (its state
//! is then unknown) or took the filter's events away.

use std::{
    ops::{Deref, DerefMut},
    sync::{Mutex, PoisonError},
};

use sip_filter::{Filter, Settings};
use sip_filter_common::maps::names;

/// Filters given back, their maps not yet cleared.
static SPARE: Mutex<Vec<Filter>> = Mutex::new(Vec::new());

/// A loaded filter, given back for the next test when dropped.
pub struct Loaded(Option<Filter>);

impl Deref for Loaded {
    type Target = Filter;

    fn deref(&self) -> &Filter {
        self.0.as_ref().expect("a filter until dropped")
    }
}

impl DerefMut for Loaded {
    fn deref_mut(&mut self) -> &mut Filter {
        self.0.as_mut().expect("a filter until dropped")
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let Some(filter) = self.0.take() else {
            return;
        };
        if !std::thread::panicking() && filter.map(names::EVENTS).is_ok() {
            SPARE
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(filter);
        }
    }
}

/// A filter with every map as a fresh load leaves it, not yet configured: one given
/// back, cleared, or a new load.
pub fn fresh() -> Loaded {
    let spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner).pop();
    let filter = match spare {
        Some(mut filter) => {
            filter.clear_maps().expect("a spare filter's maps clear");
            filter
        }
        None => Filter::load().expect("the programs load"),
    };
    Loaded(Some(filter))
}

/// [`fresh`], configured with `settings`.
pub fn configured(settings: &Settings) -> Loaded {
    let mut filter = fresh();
    filter.configure(settings).expect("settings apply");
    filter
}
