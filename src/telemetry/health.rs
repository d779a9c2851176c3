//! Liveness and readiness. The controller is ready when it is a healthy standby, or when it
//! leads and its watches have synced and the default broker has been reached once.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// Leader election role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Starting = 0,
    Standby = 1,
    Leader = 2,
}

#[derive(Debug)]
pub struct Health {
    role: AtomicU8,
    synced: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self { role: AtomicU8::new(Role::Starting as u8), synced: AtomicBool::new(false) }
    }
}

impl Health {
    pub fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Release);
        if role != Role::Leader {
            self.synced.store(false, Ordering::Release);
        }
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            1 => Role::Standby,
            2 => Role::Leader,
            _ => Role::Starting,
        }
    }

    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::Release);
    }

    /// `Ok` with a description when ready, `Err` with what is missing otherwise.
    pub fn readiness(&self, broker_connected_once: bool) -> Result<&'static str, &'static str> {
        match self.role() {
            Role::Starting => Err("starting: leader election has not decided yet"),
            Role::Standby => Ok("standby: waiting to take over the lease"),
            Role::Leader if !self.synced.load(Ordering::Acquire) => Err("leader: waiting for the initial watch sync"),
            Role::Leader if !broker_connected_once => Err("leader: the default broker has not been reached yet"),
            Role::Leader => Ok("leader: watches synced, broker reached"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_is_ready_only_after_sync_and_broker() {
        let h = Health::default();
        assert!(h.readiness(true).is_err());
        h.set_role(Role::Leader);
        assert!(h.readiness(true).is_err());
        h.set_synced(true);
        assert!(h.readiness(false).is_err());
        assert!(h.readiness(true).is_ok());
        h.set_role(Role::Standby);
        assert_eq!(h.readiness(false), Ok("standby: waiting to take over the lease"));
    }
}
