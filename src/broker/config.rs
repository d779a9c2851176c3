//! The broker connection as a Secret describes it.
//!
//! Keys: `uri` (AMQP URI, required), `managementUri` (HTTP management API base URL; defaults
//! to http://<amqp host>:15672), and optionally `username`/`password` when the URIs carry no
//! credentials, and `vhost` to override the URI's virtual host.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::ByteString;
use percent_encoding::percent_decode_str;
use url::Url;

/// How to reach one RabbitMQ broker.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// AMQP URI with credentials filled in.
    pub amqp_uri: String,
    /// Management API base URL, without credentials.
    pub management_url: Url,
    pub username: String,
    pub password: String,
    pub vhost: String,
}

// Credentials never reach logs.
impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("management_url", &self.management_url.as_str())
            .field("username", &self.username)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

/// Why a broker Secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("key {0:?} is missing")]
    MissingKey(&'static str),
    #[error("key {0:?} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("key {key:?} is not a valid URL: {reason}")]
    InvalidUrl { key: &'static str, reason: String },
    #[error("key {key:?} must use scheme {expected}")]
    WrongScheme { key: &'static str, expected: &'static str },
}

impl BrokerConfig {
    /// Reads a broker configuration from a Secret's data.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, ConfigError> {
        let text = |key: &'static str| -> Result<Option<String>, ConfigError> {
            data.get(key)
                .map(|v| String::from_utf8(v.0.clone()).map_err(|_| ConfigError::NotUtf8(key)))
                .transpose()
                .map(|v| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()))
        };
        let amqp_text = text("uri")?.ok_or(ConfigError::MissingKey("uri"))?;
        let mut amqp = parse_url("uri", &amqp_text)?;
        if !matches!(amqp.scheme(), "amqp" | "amqps") {
            return Err(ConfigError::WrongScheme { key: "uri", expected: "amqp or amqps" });
        }
        let mut management = if let Some(t) = text("managementUri")? {
            parse_url("managementUri", &t)?
        } else {
            let host = amqp.host_str().unwrap_or("localhost");
            let scheme = if amqp.scheme() == "amqps" { "https" } else { "http" };
            parse_url("uri", &format!("{scheme}://{host}:15672/"))?
        };
        if !matches!(management.scheme(), "http" | "https") {
            return Err(ConfigError::WrongScheme { key: "managementUri", expected: "http or https" });
        }

        // Explicit keys win over credentials embedded in either URI.
        let username = text("username")?
            .or_else(|| userinfo(&amqp).0)
            .or_else(|| userinfo(&management).0)
            .unwrap_or_else(|| "guest".to_owned());
        let password = text("password")?
            .or_else(|| userinfo(&amqp).1)
            .or_else(|| userinfo(&management).1)
            .unwrap_or_else(|| "guest".to_owned());
        let vhost = match text("vhost")? {
            Some(v) => v,
            None => amqp_vhost(&amqp),
        };

        // The AMQP URI carries the credentials (lapin reads them from it); the management
        // URL does not (the HTTP client sends them as basic auth).
        let _ = amqp.set_username(&username);
        let _ = amqp.set_password(Some(&password));
        let _ = management.set_username("");
        let _ = management.set_password(None);
        if !management.path().ends_with('/') {
            let path = format!("{}/", management.path());
            management.set_path(&path);
        }
        Ok(Self { amqp_uri: amqp.to_string(), management_url: management, username, password, vhost })
    }

    /// A short, credential-free description for logs and status.
    pub fn endpoint(&self) -> String {
        format!("{} vhost {:?}", self.management_url, self.vhost)
    }
}

fn parse_url(key: &'static str, text: &str) -> Result<Url, ConfigError> {
    Url::parse(text).map_err(|e| ConfigError::InvalidUrl { key, reason: e.to_string() })
}

fn userinfo(url: &Url) -> (Option<String>, Option<String>) {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let user = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
    let pass = url.password().map(decode);
    (user, pass)
}

/// The vhost of an AMQP URI: the path without its leading slash, percent-decoded; `/` when empty.
fn amqp_vhost(url: &Url) -> String {
    let path = url.path().strip_prefix('/').unwrap_or("");
    if path.is_empty() { "/".to_owned() } else { percent_decode_str(path).decode_utf8_lossy().into_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn credentials_in_the_uri() {
        let c = BrokerConfig::from_secret_data(&data(&[
            ("uri", "amqp://app:s3cr%40t@rabbit.example:5672/%2f"),
            ("managementUri", "http://rabbit.example:15672"),
        ]))
        .unwrap();
        assert_eq!(c.username, "app");
        assert_eq!(c.password, "s3cr@t");
        assert_eq!(c.vhost, "/");
        assert_eq!(c.management_url.as_str(), "http://rabbit.example:15672/");
        assert_eq!(c.amqp_uri, "amqp://app:s3cr%40t@rabbit.example:5672/%2f");
    }

    #[test]
    fn separate_credentials_and_default_management_url() {
        let c = BrokerConfig::from_secret_data(&data(&[
            ("uri", "amqps://rabbit.example/shop"),
            ("username", "ops"),
            ("password", "pw"),
        ]))
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str(), c.vhost.as_str()), ("ops", "pw", "shop"));
        assert_eq!(c.management_url.as_str(), "https://rabbit.example:15672/");
        assert_eq!(c.amqp_uri, "amqps://ops:pw@rabbit.example/shop");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = BrokerConfig::from_secret_data(&data(&[("uri", "amqp://u:topsecret@h/")])).unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
        assert!(!c.endpoint().contains("topsecret"));
    }

    #[test]
    fn bad_secrets_say_what_to_fix() {
        let missing = BrokerConfig::from_secret_data(&data(&[("managementUri", "http://h")]));
        assert_eq!(missing.unwrap_err().to_string(), "key \"uri\" is missing");
        let scheme = BrokerConfig::from_secret_data(&data(&[("uri", "http://h")]));
        assert_eq!(scheme.unwrap_err().to_string(), "key \"uri\" must use scheme amqp or amqps");
    }
}
