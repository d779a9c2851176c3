//! Status conditions as a map keyed by type, following kstatus: `Ready`, plus `Reconciling`
//! while converging and `Stalled` when a human must act. `lastTransitionTime` moves only when
//! a condition's status really changes.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Where a reconcile left the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Converged: everything the spec asks for exists.
    Ready { reason: &'static str, message: String },
    /// Not there yet, and retrying by itself (a broker that is down, a missing reference).
    Progressing { reason: &'static str, message: String },
    /// Cannot converge until a human changes something. Retried with backoff in case the cause
    /// goes away, unless only a change to the object (or one it watches) can fix it.
    Stalled { reason: &'static str, message: String },
}

impl Outcome {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Ready { reason, .. } | Self::Progressing { reason, .. } | Self::Stalled { reason, .. } => reason,
        }
    }
}

/// A set of conditions being updated, keyed by type.
#[derive(Debug, Clone)]
pub struct Conditions {
    items: Vec<Condition>,
    generation: Option<i64>,
    now: Timestamp,
}

impl Conditions {
    /// Starts from the conditions currently in status.
    pub fn from_status(previous: &[Condition], generation: Option<i64>, now: Timestamp) -> Self {
        Self { items: previous.to_vec(), generation, now }
    }

    /// Sets one condition, keeping its transition time when the status did not change.
    pub fn set(&mut self, type_: &str, status: bool, reason: &str, message: &str) -> &mut Self {
        let status = if status { "True" } else { "False" };
        self.set_raw(type_, status, reason, message)
    }

    fn set_raw(&mut self, type_: &str, status: &str, reason: &str, message: &str) -> &mut Self {
        let transition = self
            .items
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or(Time(self.now), |c| c.last_transition_time.clone());
        let condition = Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: truncate(message),
            observed_generation: self.generation,
            last_transition_time: transition,
        };
        match self.items.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => *existing = condition,
            None => self.items.push(condition),
        }
        self
    }

    /// Sets Ready, Reconciling and Stalled from a reconcile's outcome.
    pub fn outcome(&mut self, outcome: &Outcome) -> &mut Self {
        match outcome {
            Outcome::Ready { reason, message } => {
                self.set(READY, true, reason, message);
                self.set(RECONCILING, false, reason, "");
                self.set(STALLED, false, reason, "")
            }
            Outcome::Progressing { reason, message } => {
                self.set(READY, false, reason, message);
                self.set(RECONCILING, true, reason, message);
                self.set(STALLED, false, reason, "")
            }
            Outcome::Stalled { reason, message } => {
                self.set(READY, false, reason, message);
                self.set(RECONCILING, false, reason, "");
                self.set(STALLED, true, reason, message)
            }
        }
    }

    /// Marks a new generation as being worked on: Ready becomes Unknown the first time
    /// (so kstatus never mistakes a fresh object for a finished one); otherwise Ready keeps
    /// its value and its older observedGeneration, which `kubectl wait` treats as stale.
    pub fn reconciling(&mut self, message: &str) -> &mut Self {
        if self.get(READY).is_none() {
            self.set_raw(READY, "Unknown", "Reconciling", message);
        }
        self.set(RECONCILING, true, "Reconciling", message);
        self.set(STALLED, false, "Reconciling", "")
    }

    pub fn get(&self, type_: &str) -> Option<&Condition> {
        self.items.iter().find(|c| c.type_ == type_)
    }

    pub fn into_vec(self) -> Vec<Condition> {
        self.items
    }
}

/// The Ready condition of a status, if present.
pub fn ready_condition(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == READY)
}

// Condition messages are for humans; keep them within what kubectl shows sensibly.
fn truncate(message: &str) -> String {
    const MAX: usize = 1024;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn ready_sets_all_three_kstatus_conditions() {
        let mut c = Conditions::from_status(&[], Some(3), at(100));
        c.outcome(&Outcome::Ready { reason: "Ready", message: "exchange declared".into() });
        let v = c.into_vec();
        let by_type = |t: &str| v.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(by_type(READY).status, "True");
        assert_eq!(by_type(READY).observed_generation, Some(3));
        assert_eq!(by_type(RECONCILING).status, "False");
        assert_eq!(by_type(STALLED).status, "False");
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = Conditions::from_status(&[], Some(1), at(100));
        c.outcome(&Outcome::Progressing { reason: "BrokerUnavailable", message: "down".into() });
        let first = c.into_vec();

        let mut c = Conditions::from_status(&first, Some(1), at(200));
        c.outcome(&Outcome::Progressing { reason: "BrokerUnavailable", message: "still down".into() });
        let second = c.into_vec();
        assert_eq!(ready_condition(&second).unwrap().last_transition_time, Time(at(100)));
        assert_eq!(ready_condition(&second).unwrap().message, "still down");

        let mut c = Conditions::from_status(&second, Some(1), at(300));
        c.outcome(&Outcome::Ready { reason: "Ready", message: "ok".into() });
        assert_eq!(ready_condition(&c.into_vec()).unwrap().last_transition_time, Time(at(300)));
    }

    #[test]
    fn stalled_is_true_only_when_a_human_must_act() {
        let mut c = Conditions::from_status(&[], Some(1), at(1));
        c.outcome(&Outcome::Stalled { reason: "BrokerConflict", message: "type differs".into() });
        let v = c.into_vec();
        assert_eq!(v.iter().find(|c| c.type_ == STALLED).unwrap().status, "True");
        assert_eq!(v.iter().find(|c| c.type_ == RECONCILING).unwrap().status, "False");
    }

    #[test]
    fn a_new_object_starts_with_ready_unknown_and_a_spec_change_keeps_ready() {
        let mut c = Conditions::from_status(&[], Some(1), at(1));
        c.reconciling("generation 1");
        assert_eq!(c.get(READY).unwrap().status, "Unknown");

        let mut done = Conditions::from_status(&[], Some(1), at(1));
        done.outcome(&Outcome::Ready { reason: "Ready", message: String::new() });
        let mut next = Conditions::from_status(&done.into_vec(), Some(2), at(2));
        next.reconciling("generation 2");
        assert_eq!(next.get(READY).unwrap().status, "True");
        assert_eq!(next.get(RECONCILING).unwrap().status, "True");
    }
}
