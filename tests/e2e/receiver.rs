//! A real webhook receiver for the tests: verifies every request's Standard Webhooks
//! signature against the keys it knows, answers what the test's behaviour says, and counts
//! attempts and deliveries per event id so every id can be accounted for exactly.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use sluice::dispatch::signing::{SigningKey, generate_secret, verify};

/// What the receiver answers for an event id on its n-th attempt (1-based).
pub type Behaviour = Arc<dyn Fn(&str, u32) -> u16 + Send + Sync>;

/// What the receiver answers for an event id in an `event-version` on the n-th attempt of that
/// id in that version (1-based): Subscriptions pinned to different versions count apart.
pub type VersionedBehaviour = Arc<dyn Fn(&str, Option<&str>, u32) -> u16 + Send + Sync>;

#[derive(Default)]
pub struct Seen {
    /// Attempts per id (every request with a valid signature).
    pub attempts: HashMap<String, u32>,
    /// Successful (2xx) deliveries per id.
    pub delivered: HashMap<String, u32>,
    /// Requests no known key verified.
    pub bad_signatures: u32,
    /// Requests each key verified (by the index of the key).
    pub verified_by: Vec<u32>,
    /// For each id, the keys (by index) that verified its last request.
    pub keys_of: HashMap<String, Vec<usize>>,
    /// Ids in the order their successful deliveries arrived.
    pub order: Vec<String>,
    /// Every request a known key verified, in arrival order.
    pub requests: Vec<Received>,
}

/// One verified request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    /// Header names lowercased.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl Seen {
    /// Deliveries beyond the first of each id.
    pub fn duplicates(&self) -> u32 {
        self.delivered.values().map(|n| n - 1).sum()
    }
}

/// An event id and the `event-version` it arrived in.
type VersionedId = (String, Option<String>);

#[derive(Clone)]
struct Receiver {
    keys: Arc<Mutex<Vec<SigningKey>>>,
    behaviour: VersionedBehaviour,
    seen: Arc<Mutex<Seen>>,
    /// Attempts per (id, event-version).
    versioned: Arc<Mutex<HashMap<VersionedId, u32>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, timestamp, signature) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let verified: Vec<bool> = {
        let keys = r.keys.lock().expect("lock");
        keys.iter().map(|k| timestamp.parse().is_ok_and(|ts| verify(k, &id, ts, &body, &signature))).collect()
    };
    let mut seen = r.seen.lock().expect("lock");
    seen.verified_by.resize(verified.len(), 0);
    for (i, ok) in verified.iter().enumerate() {
        if *ok {
            seen.verified_by[i] += 1;
        }
    }
    if !verified.contains(&true) {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let keys = verified.iter().enumerate().filter(|(_, ok)| **ok).map(|(i, _)| i).collect();
    seen.keys_of.insert(id.clone(), keys);
    let version = headers.get("event-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let headers = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let received = Received { id: id.clone(), headers, body: body.clone(), status: 0 };
    *seen.attempts.entry(id.clone()).or_default() += 1;
    let attempt = {
        let mut versioned = r.versioned.lock().expect("lock");
        let n = versioned.entry((id.clone(), version.clone())).or_default();
        *n += 1;
        *n
    };
    let code = (r.behaviour)(&id, version.as_deref(), attempt);
    seen.requests.push(Received { status: code, ..received });
    if (200..300).contains(&code) {
        seen.order.push(id.clone());
        *seen.delivered.entry(id).or_default() += 1;
    }
    StatusCode::from_u16(code).expect("status")
}

/// A receiver that knows `secrets`; more keys can be added through the returned handle.
pub struct Handle {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    keys: Arc<Mutex<Vec<SigningKey>>>,
}

impl Handle {
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Also accepts (and counts separately) signatures made with `secret`.
    pub fn learn(&self, secret: &str) {
        self.keys.lock().expect("lock").push(SigningKey::parse(secret).expect("key"));
    }
}

/// Starts a receiver knowing `secrets`.
pub async fn start(secrets: &[&str], behaviour: Behaviour) -> Handle {
    // The attempt an id-only behaviour sees counts every request of the id, whatever its version.
    let by_id: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let versioned: VersionedBehaviour = Arc::new(move |id, _, _| {
        let attempt = {
            let mut by_id = by_id.lock().expect("lock");
            let n = by_id.entry(id.to_owned()).or_default();
            *n += 1;
            *n
        };
        behaviour(id, attempt)
    });
    start_versioned(secrets, versioned).await
}

/// Starts a receiver knowing `secrets` whose answers depend on the event version too.
pub async fn start_versioned(secrets: &[&str], behaviour: VersionedBehaviour) -> Handle {
    let keys = Arc::new(Mutex::new(secrets.iter().map(|s| SigningKey::parse(s).expect("key")).collect()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Receiver { keys: keys.clone(), behaviour, seen: seen.clone(), versioned: Arc::default() };
    let app = Router::new().route("/hook", post(receive)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Handle { addr, seen, keys }
}

/// Starts a receiver with a fresh secret; returns its address, the secret and what it saw.
pub async fn receiver(behaviour: Behaviour) -> (SocketAddr, String, Arc<Mutex<Seen>>) {
    let secret = generate_secret();
    let handle = start(&[&secret], behaviour).await;
    (handle.addr, secret, handle.seen)
}
