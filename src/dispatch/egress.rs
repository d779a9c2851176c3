//! The egress guard: which addresses a webhook delivery may connect to.
//!
//! Endpoint URLs are written by users, so without a guard a Webhook could make the dispatcher call
//! the cloud metadata service, the node's loopback or anything else only the cluster can reach
//! (SSRF). Every address is judged at connect time by [`EgressPolicy::check`]: the client from
//! [`http_client`] resolves names through [`GuardedResolver`], which hands the connector only the
//! addresses it vetted, so a name that re-resolves to another address between check and connect
//! (DNS rebinding) cannot slip through. reqwest never asks the resolver about IP-literal hosts, so
//! callers run [`EgressPolicy::check_url`] before sending. Redirects are not followed and proxy
//! environment variables are ignored, because either would move the connection out of our sight.

use std::{
    error::Error as StdError,
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The `User-Agent` header of every delivery.
pub const USER_AGENT: &str = concat!("sluice-dispatcher/", env!("CARGO_PKG_VERSION"));

/// The kind of special-purpose range an address belongs to. Bounded, so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EgressCategory {
    /// 127.0.0.0/8 and ::1: the dispatcher pod itself.
    Loopback,
    /// 169.254.0.0/16, fe80::/10 and the AWS IPv6 metadata address fd00:ec2::254.
    LinkLocal,
    /// 0.0.0.0/8 and ::, which many stacks treat as "this host".
    Unspecified,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32.
    Documentation,
    /// 10/8, 172.16/12, 192.168/16, the shared 100.64/10 and unique-local fc00::/7; refused only
    /// when the policy says so, since in-cluster Services live here.
    Private,
}

impl EgressCategory {
    /// The label used in metrics and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link_local",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Private => "private",
        }
    }

    /// The special-purpose range `ip` falls in, or `None` for an ordinary public address.
    /// IPv4-mapped and IPv4-compatible IPv6 addresses are judged as their IPv4 address.
    pub fn of(ip: IpAddr) -> Option<Self> {
        match embedded_ipv4(ip) {
            IpAddr::V4(v4) => V4_RANGES.iter().find(|(net, _)| net.contains(&v4)).map(|&(_, category)| category),
            IpAddr::V6(v6) => V6_RANGES.iter().find(|(net, _)| net.contains(&v6)).map(|&(_, category)| category),
        }
    }
}

impl fmt::Display for EgressCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(addr: Ipv6Addr, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(addr, prefix)
}

const V4_RANGES: [(Ipv4Net, EgressCategory); 12] = [
    (v4(0, 0, 0, 0, 8), EgressCategory::Unspecified),
    (v4(127, 0, 0, 0, 8), EgressCategory::Loopback),
    (v4(169, 254, 0, 0, 16), EgressCategory::LinkLocal),
    (v4(224, 0, 0, 0, 4), EgressCategory::Multicast),
    (v4(255, 255, 255, 255, 32), EgressCategory::Broadcast),
    (v4(192, 0, 2, 0, 24), EgressCategory::Documentation),
    (v4(198, 51, 100, 0, 24), EgressCategory::Documentation),
    (v4(203, 0, 113, 0, 24), EgressCategory::Documentation),
    (v4(10, 0, 0, 0, 8), EgressCategory::Private),
    (v4(172, 16, 0, 0, 12), EgressCategory::Private),
    (v4(192, 168, 0, 0, 16), EgressCategory::Private),
    (v4(100, 64, 0, 0, 10), EgressCategory::Private),
];

// First match wins: the metadata address must come before the unique-local range holding it.
const V6_RANGES: [(Ipv6Net, EgressCategory); 7] = [
    (v6(Ipv6Addr::UNSPECIFIED, 128), EgressCategory::Unspecified),
    (v6(Ipv6Addr::LOCALHOST, 128), EgressCategory::Loopback),
    (v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), EgressCategory::LinkLocal),
    (v6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), 128), EgressCategory::LinkLocal),
    (v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), EgressCategory::Multicast),
    (v6(Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0), 32), EgressCategory::Documentation),
    (v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), EgressCategory::Private),
];

/// The IPv4 address carried by an IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d)
/// IPv6 address, since the kernel connects those to the IPv4 host; any other address unchanged.
fn embedded_ipv4(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return IpAddr::V4(mapped);
    }
    // :: and ::1 are IPv6's own unspecified and loopback addresses, not compatible ones.
    match v6.octets() {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 | 1] => ip,
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d] => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        _ => ip,
    }
}

/// A delivery was not allowed to connect to an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "egress to {address} refused: it is a {category} address; add it to the dispatcher's egress allowlist to allow it"
)]
pub struct EgressRefused {
    /// The refused address, as resolved or as written in the URL.
    pub address: IpAddr,
    /// Why it was refused.
    pub category: EgressCategory,
}

impl EgressRefused {
    /// The refusal somewhere in `error`'s source chain, e.g. in the `reqwest::Error` of a send
    /// whose host resolved only to refused addresses.
    pub fn find_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Self> {
        std::iter::successors(Some(error), |&error| error.source()).find_map(|error| error.downcast_ref::<Self>())
    }
}

/// Which addresses deliveries may connect to. The default allows public and private addresses and
/// refuses every other special-purpose range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// The operator's admin allowlist; an address in it is allowed whatever its category.
    pub allow: Vec<IpNet>,
    /// Refuse private ranges too (cluster-wide), e.g. when no Webhook should reach in-cluster Services.
    pub refuse_private: bool,
}

impl EgressPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), EgressRefused> {
        let judged = embedded_ipv4(ip);
        if self.allow.iter().any(|net| net.contains(&ip) || net.contains(&judged)) {
            return Ok(());
        }
        match EgressCategory::of(judged) {
            None => Ok(()),
            Some(EgressCategory::Private) if !self.refuse_private => Ok(()),
            Some(category) => Err(EgressRefused { address: ip, category }),
        }
    }

    /// Checks an IP-literal host (`http://10.0.0.1/`, `http://[::1]/`); names pass, since the
    /// resolver checks what they resolve to. reqwest bypasses the resolver for literals, so run
    /// this before every send.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressRefused> {
        match url.host() {
            Some(Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)),
            Some(Host::Domain(_)) | None => Ok(()),
        }
    }

    /// The resolved addresses a delivery may use, in resolver order; the first refusal when none is
    /// left, so the error names a real address.
    fn allowed(&self, host: &str, resolved: impl IntoIterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, BoxError> {
        let mut first_refusal = None;
        let mut allowed = Vec::new();
        for addr in resolved {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(refused) => {
                    let (address, category) = (refused.address, refused.category);
                    tracing::debug!(host, %address, %category, "dropped a refused address");
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (false, _) => Ok(allowed),
            (true, Some(refused)) => Err(refused.into()),
            (true, None) => Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no addresses")).into()),
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

/// A reqwest resolver that resolves with the system resolver and keeps only the addresses the
/// policy allows; the connector dials exactly those, so the check cannot be raced.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: EgressPolicy) -> Self {
        Self { policy: Arc::new(policy) }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's (or the scheme's) port in.
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.allowed(&host, resolved)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The delivery HTTP client, to finish building: resolves through [`GuardedResolver`], follows no
/// redirects (a 3xx is the endpoint's answer), ignores proxy environment variables and identifies
/// as [`USER_AGENT`]. IP-literal URLs still need [`EgressPolicy::check_url`] before sending.
pub fn http_client(policy: EgressPolicy, connect_timeout: Duration, timeout: Duration) -> reqwest::ClientBuilder {
    // reqwest is built without a crypto provider and panics without one; use the binary's choice.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(GuardedResolver::new(policy))
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(USER_AGENT)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use EgressCategory::{Broadcast, Documentation, LinkLocal, Loopback, Multicast, Private, Unspecified};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn allowing(nets: &[&str]) -> EgressPolicy {
        EgressPolicy { allow: nets.iter().map(|net| net.parse().unwrap()).collect(), refuse_private: false }
    }

    const CLASSIFIED: &[(&str, Option<EgressCategory>)] = &[
        ("127.0.0.1", Some(Loopback)),
        ("127.255.255.254", Some(Loopback)),
        ("::1", Some(Loopback)),
        ("169.254.169.254", Some(LinkLocal)),
        ("169.254.0.1", Some(LinkLocal)),
        ("fe80::1", Some(LinkLocal)),
        ("febf:ffff::1", Some(LinkLocal)),
        ("fd00:ec2::254", Some(LinkLocal)),
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(Unspecified)),
        ("::", Some(Unspecified)),
        ("224.0.0.1", Some(Multicast)),
        ("239.255.255.250", Some(Multicast)),
        ("ff02::1", Some(Multicast)),
        ("255.255.255.255", Some(Broadcast)),
        ("192.0.2.1", Some(Documentation)),
        ("198.51.100.7", Some(Documentation)),
        ("203.0.113.200", Some(Documentation)),
        ("2001:db8::1", Some(Documentation)),
        ("10.0.0.1", Some(Private)),
        ("10.96.0.10", Some(Private)),
        ("172.16.0.1", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("192.168.1.1", Some(Private)),
        ("100.64.0.1", Some(Private)),
        ("100.127.255.255", Some(Private)),
        ("fc00::1", Some(Private)),
        ("fd12:3456::1", Some(Private)),
        ("fd00:ec2::253", Some(Private)),
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::ffff:169.254.169.254", Some(LinkLocal)),
        ("::ffff:10.1.2.3", Some(Private)),
        ("::127.0.0.1", Some(Loopback)),
        ("::ffff:93.184.216.34", None),
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("172.15.255.255", None),
        ("100.128.0.1", None),
        ("169.255.0.1", None),
        ("223.255.255.255", None),
        ("192.0.3.1", None),
        ("2606:4700::1111", None),
        ("2001:db9::1", None),
        ("fec0::1", None),
    ];

    #[test]
    fn classifies_special_purpose_ranges() {
        for &(address, expected) in CLASSIFIED {
            assert_eq!(EgressCategory::of(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn default_policy_refuses_every_category_but_private() {
        let policy = EgressPolicy::default();
        for &(address, category) in CLASSIFIED {
            let expected = match category {
                None | Some(Private) => Ok(()),
                Some(category) => Err(EgressRefused { address: ip(address), category }),
            };
            assert_eq!(policy.check(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn refuse_private_refuses_private_ranges_only_in_addition() {
        let policy = EgressPolicy { refuse_private: true, ..EgressPolicy::default() };
        for &(address, category) in CLASSIFIED {
            let expected = category.map_or(Ok(()), |category| Err(EgressRefused { address: ip(address), category }));
            assert_eq!(policy.check(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn allowlist_overrides_every_refusal() {
        let policy = EgressPolicy {
            refuse_private: true,
            ..allowing(&["127.0.0.0/8", "169.254.169.254/32", "::1/128", "10.96.0.0/12", "fd00:ec2::254/128"])
        };
        for address in ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "::1", "10.96.0.10", "fd00:ec2::254"] {
            assert_eq!(policy.check(ip(address)), Ok(()), "{address}");
        }
        for (address, category) in [("169.254.169.253", LinkLocal), ("10.0.0.1", Private), ("::ffff:10.0.0.1", Private)]
        {
            assert_eq!(policy.check(ip(address)), Err(EgressRefused { address: ip(address), category }), "{address}");
        }
        // An allowlist entry written in mapped form covers the mapped address.
        assert_eq!(allowing(&["::ffff:127.0.0.1/128"]).check(ip("::ffff:127.0.0.1")), Ok(()));
    }

    #[test]
    fn refusal_names_address_category_and_remedy() {
        let refused = EgressPolicy::default().check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "egress to 169.254.169.254 refused: it is a link_local address; add it to the dispatcher's egress \
             allowlist to allow it"
        );
        let labels = [Loopback, LinkLocal, Unspecified, Multicast, Broadcast, Documentation, Private]
            .map(EgressCategory::as_str);
        assert_eq!(
            labels,
            ["loopback", "link_local", "unspecified", "multicast", "broadcast", "documentation", "private"]
        );
    }

    #[test]
    fn check_url_judges_ip_literals_and_leaves_names_to_the_resolver() {
        let policy = EgressPolicy::default();
        let refused = |url: &str| policy.check_url(&Url::parse(url).unwrap()).err().map(|refused| refused.category);
        assert_eq!(refused("http://127.0.0.1:8080/hook"), Some(Loopback));
        assert_eq!(refused("https://[::1]/hook"), Some(Loopback));
        assert_eq!(refused("http://[::ffff:169.254.169.254]/"), Some(LinkLocal));
        assert_eq!(refused("http://169.254.169.254/latest/meta-data"), Some(LinkLocal));
        assert_eq!(refused("http://[fd00:ec2::254]/latest/meta-data"), Some(LinkLocal));
        // The URL parser normalises decimal and hex IPv4 spellings, so they cannot dodge the check.
        assert_eq!(refused("http://2130706433/"), Some(Loopback));
        assert_eq!(refused("http://0x7f.1/"), Some(Loopback));
        assert_eq!(refused("http://0.0.0.0:9000/"), Some(Unspecified));
        assert_eq!(refused("https://93.184.216.34/hook"), None);
        assert_eq!(refused("https://[2606:4700::1111]/hook"), None);
        assert_eq!(refused("http://10.96.0.10/hook"), None);
        assert_eq!(refused("http://localhost/hook"), None);
        assert_eq!(refused("https://hooks.example.com/hook"), None);
        let strict = EgressPolicy { refuse_private: true, ..EgressPolicy::default() };
        assert_eq!(strict.check_url(&Url::parse("http://10.96.0.10/").unwrap()).unwrap_err().category, Private);
    }

    #[test]
    fn resolved_addresses_are_filtered_in_order() {
        let addrs = |list: &[&str]| list.iter().map(|a| SocketAddr::new(ip(a), 0)).collect::<Vec<_>>();
        let policy = EgressPolicy::default();
        let kept = policy.allowed("mixed.test", addrs(&["127.0.0.1", "93.184.216.34", "::1", "10.0.0.1"])).unwrap();
        assert_eq!(kept, addrs(&["93.184.216.34", "10.0.0.1"]));

        let error = policy.allowed("rebind.test", addrs(&["169.254.169.254", "127.0.0.1"])).unwrap_err();
        let refused = error.downcast_ref::<EgressRefused>().unwrap();
        assert_eq!(refused, &EgressRefused { address: ip("169.254.169.254"), category: LinkLocal });

        let error = policy.allowed("empty.test", Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "empty.test has no addresses");
    }

    /// A local HTTP server answering every request with `response`; records the request heads.
    struct TestServer {
        port: u16,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl TestServer {
        async fn start(response: String) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let seen = Arc::clone(&requests);
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let mut head = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                }
            });
            Self { port, requests }
        }

        fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

    fn client(policy: EgressPolicy) -> reqwest::Client {
        http_client(policy, Duration::from_secs(2), Duration::from_secs(5)).build().unwrap()
    }

    #[tokio::test]
    async fn client_refuses_a_name_resolving_to_loopback() {
        let server = TestServer::start(OK.to_owned()).await;
        let error = client(EgressPolicy::default())
            .post(format!("http://localhost:{}/", server.port))
            .body("{}")
            .send()
            .await
            .unwrap_err();
        let refused = EgressRefused::find_in(&error).expect("the refusal is in the error chain");
        assert_eq!(refused.category, Loopback);
        let chain: Vec<String> =
            std::iter::successors(Some(&error as &dyn StdError), |&e| e.source()).map(ToString::to_string).collect();
        assert!(chain.iter().any(|e| e.contains("egress allowlist")), "{chain:?}");
        assert_eq!(server.requests().len(), 0);
    }

    #[tokio::test]
    async fn client_reaches_an_allowlisted_loopback_name() {
        let server = TestServer::start(OK.to_owned()).await;
        let response = client(allowing(&["127.0.0.0/8"]))
            .post(format!("http://localhost:{}/hook", server.port))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert!(requests[0].starts_with("POST /hook HTTP/1.1\r\n"), "{}", requests[0]);
        let user_agent = format!("user-agent: sluice-dispatcher/{}\r\n", env!("CARGO_PKG_VERSION"));
        assert!(requests[0].to_ascii_lowercase().contains(&user_agent), "{}", requests[0]);
    }

    #[tokio::test]
    async fn check_url_refuses_loopback_and_metadata_literals() {
        let server = TestServer::start(OK.to_owned()).await;
        let policy = EgressPolicy::default();
        for (url, address, category) in [
            (format!("http://127.0.0.1:{}/", server.port), "127.0.0.1", Loopback),
            ("http://[::1]/".to_owned(), "::1", Loopback),
            ("http://169.254.169.254/latest/meta-data".to_owned(), "169.254.169.254", LinkLocal),
        ] {
            let refused = policy.check_url(&Url::parse(&url).unwrap());
            assert_eq!(refused, Err(EgressRefused { address: ip(address), category }), "{url}");
        }
        assert_eq!(server.requests().len(), 0);
    }

    #[tokio::test]
    async fn redirects_are_returned_not_followed() {
        let server = TestServer::start(
            "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        )
        .await;
        let response = client(allowing(&["127.0.0.0/8"]))
            .post(format!("http://localhost:{}/hook", server.port))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::FOUND);
        assert_eq!(response.headers()[reqwest::header::LOCATION], "/elsewhere");
        assert_eq!(server.requests().len(), 1);
    }
}
