//! What the daemon tells systemd (`Type=notify`, sd_notify(3)): ready once its programs
//! are attached, reloading around a SIGHUP, stopping. Without `NOTIFY_SOCKET` (not run by
//! systemd) each call does nothing.

use sd_notify::NotifyState;

/// The XDP and egress programs are attached and pinned, and the signals are watched:
/// `systemctl start` returns now, and units ordered after this one start.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP reload begins; [`ready`] ends it. systemd 253 and later want the time with it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// The daemon saves its state and detaches.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState]) {
    // The filter works without systemd's view of it: a lost notification is logged only.
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
}
