//! File descriptors: how many Keyway may hold, and how many client connections that buys.
//!
//! Every client connection is a descriptor, and so is every upstream connection it leads
//! to. A process that runs out cannot accept, cannot dial, and cannot answer its own admin
//! port. So the soft limit is raised to the hard one at start, and client connections are
//! capped below what the limit can carry, with room left for upstream connections, the
//! config files, the watcher and the admin port.

/// Descriptors kept back for everything that is not a client or upstream connection.
const RESERVED: u64 = 128;

/// Raises the soft limit on open files to the hard limit; returns the limit now in force
/// (`None` where it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The default `--max-connections` for a limit of `nofile` descriptors: half of what is
/// left after the reserve (each client connection may need an upstream one), at least 64.
pub fn default_max_connections(nofile: Option<u64>) -> usize {
    match nofile {
        Some(n) => (n.saturating_sub(RESERVED) / 2).clamp(64, 1 << 20) as usize,
        None => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_room_for_upstreams_and_the_rest() {
        assert_eq!(default_max_connections(Some(1024)), 448);
        assert_eq!(default_max_connections(Some(100)), 64);
        assert_eq!(default_max_connections(Some(1 << 30)), 1 << 20);
        assert_eq!(default_max_connections(None), 4096);
    }
}
