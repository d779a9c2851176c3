//! The headers that tell a receiver its version is going away: `Deprecation` (RFC 9745, a
//! Structured Field date: `@` and Unix seconds), `Sunset` (RFC 8594, an HTTP date in the
//! IMF-fixdate form of RFC 9110) and `Link` to the migration guide with `rel="deprecation"`.

use k8s_openapi::jiff::{Timestamp, fmt::rfc2822::DateTimePrinter};

/// The `Deprecation` header's name.
pub const DEPRECATION: &str = "deprecation";
/// The `Sunset` header's name.
pub const SUNSET: &str = "sunset";
/// The `Link` header's name.
pub const LINK: &str = "link";

/// The header values deliveries of a deprecated version carry, computed once per configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub deprecation: String,
    pub sunset: Option<String>,
    pub link: Option<String>,
}

impl Notice {
    pub fn new(deprecated_at: Timestamp, sunset_at: Option<Timestamp>, documentation: Option<&str>) -> Self {
        Self { deprecation: deprecation(deprecated_at), sunset: sunset_at.map(sunset), link: documentation.map(link) }
    }

    /// The headers as (name, value) pairs, in the order they are sent.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [(DEPRECATION, Some(self.deprecation.as_str())), (SUNSET, self.sunset.as_deref()), (LINK, self.link.as_deref())]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
    }
}

/// `@<unix seconds>`: RFC 9745's sf-date.
pub fn deprecation(at: Timestamp) -> String {
    format!("@{}", at.as_second())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`: RFC 9110's IMF-fixdate, which RFC 8594 uses.
pub fn sunset(at: Timestamp) -> String {
    // Only years beyond 9999 fail to print; the apiserver stores none.
    DateTimePrinter::new().timestamp_to_rfc9110_string(&at).unwrap_or_default()
}

/// `<url>; rel="deprecation"`.
pub fn link(url: &str) -> String {
    format!("<{url}>; rel=\"deprecation\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> Timestamp {
        rfc3339.parse().expect("timestamp")
    }

    #[test]
    fn deprecation_is_an_sf_date_as_in_rfc_9745() {
        // RFC 9745 section 2.1: "Deprecation: @1688169599" (Friday, June 30, 2023 at 23:59:59 UTC).
        assert_eq!(deprecation(at("2023-06-30T23:59:59Z")), "@1688169599");
        assert_eq!(deprecation(at("1970-01-01T00:00:00Z")), "@0");
    }

    #[test]
    fn sunset_is_an_imf_fixdate_as_in_rfc_8594() {
        // RFC 8594 section 3's example is "Sunset: Sat, 31 Dec 2018 23:59:59 GMT", but that day
        // was a Monday, and RFC 9110 makes the day name part of the date: the right one is sent.
        assert_eq!(sunset(at("2018-12-31T23:59:59Z")), "Mon, 31 Dec 2018 23:59:59 GMT");
        // RFC 9110 section 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT", the day zero-padded.
        assert_eq!(sunset(at("1994-11-06T08:49:37Z")), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn link_points_at_the_migration_guide_as_in_rfc_9745() {
        // RFC 9745 section 3: Link: <https://developer.example.com/deprecation>; rel="deprecation"
        assert_eq!(
            link("https://developer.example.com/deprecation"),
            r#"<https://developer.example.com/deprecation>; rel="deprecation""#
        );
    }

    #[test]
    fn a_notice_sends_what_the_version_declares() {
        let full = Notice::new(
            at("2026-06-01T00:00:00Z"),
            Some(at("2027-01-01T00:00:00Z")),
            Some("https://docs.example.com/v1"),
        );
        assert_eq!(
            full.headers().collect::<Vec<_>>(),
            [
                ("deprecation", "@1780272000"),
                ("sunset", "Fri, 01 Jan 2027 00:00:00 GMT"),
                ("link", r#"<https://docs.example.com/v1>; rel="deprecation""#)
            ]
        );
        let bare = Notice::new(at("2026-06-01T00:00:00Z"), None, None);
        assert_eq!(bare.headers().collect::<Vec<_>>(), [("deprecation", "@1780272000")]);
    }
}
