//! The addresses of network interfaces, read with `getifaddrs(3)` (netlink underneath):
//! the server's own addresses when the configuration names none.

use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The IPv4 and IPv6 addresses of each interface in `names`, in the order given (an
/// interface's own in the kernel's order), without repeats. An interface that has none,
/// or does not exist, adds nothing.
pub fn addresses_of(names: &[String]) -> std::io::Result<Vec<(String, IpAddr)>> {
    let mut all = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated into `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let node = unsafe { &*entry };
        entry = node.ifa_next;
        if node.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string inside the list.
        let name = unsafe { CStr::from_ptr(node.ifa_name) }.to_string_lossy();
        // SAFETY: ifa_addr, when set, points at a sockaddr of the family it names.
        if let Some(address) = unsafe { ip_of(node.ifa_addr) } {
            all.push((name.into_owned(), address));
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once; nothing points into it now.
    unsafe { libc::freeifaddrs(list) };
    let mut found: Vec<(String, IpAddr)> = Vec::new();
    for name in names {
        for (iface, address) in &all {
            if iface == name && !found.iter().any(|(_, seen)| seen == address) {
                found.push((iface.clone(), *address));
            }
        }
    }
    Ok(found)
}

/// The IP address in `addr`, for IPv4 and IPv6 socket addresses.
///
/// # Safety
/// `addr` is null, or points at a socket address as long as its family says.
unsafe fn ip_of(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    match i32::from(unsafe { (*addr).sa_family }) {
        libc::AF_INET => {
            let v4 = unsafe { &*addr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            let v6 = unsafe { &*addr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address_and_others_add_nothing() {
        let found = addresses_of(&["lo".into(), "no-such-interface".into()]).unwrap();
        assert!(
            found.contains(&("lo".into(), IpAddr::V4(Ipv4Addr::LOCALHOST))),
            "{found:?}"
        );
        assert!(found.iter().all(|(iface, _)| iface == "lo"), "{found:?}");
        // Asked twice, listed once.
        let twice = addresses_of(&["lo".into(), "lo".into()]).unwrap();
        assert_eq!(twice, found[..twice.len()]);
        assert_eq!(twice.len(), found.len());
    }
}
