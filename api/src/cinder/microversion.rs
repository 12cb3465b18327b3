//! Block Storage microversions: the `OpenStack-API-Version: volume 3.N` request header,
//! negotiated as Cinder does (`cinder/api/openstack/api_version_request.py`).
//!
//! - no header: 3.0, the minimum;
//! - `volume latest`: 3.71, the maximum;
//! - `volume 3.N` with `N` written without leading zeros: that version, if within 3.0..=3.71,
//!   else 406;
//! - a header with no `volume` entry, or a malformed one: 400.
//!
//! The header may name several services (`compute 2.1, volume 3.7`); only `volume` counts.

use std::fmt;

use warp::http::HeaderMap;

use crate::error::ApiError;

/// Name of the request and response header.
pub const HEADER: &str = "openstack-api-version";
/// The service name in the header.
pub const SERVICE: &str = "volume";

/// A Block Storage API version, `3.minor` (the only major version served).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    /// The minor version; the major is always 3.
    minor: u32,
}

impl ApiVersion {
    /// The only major version served.
    pub const MAJOR: u32 = 3;
    /// The oldest version served (also the one answered when the client names none).
    pub const MIN: ApiVersion = ApiVersion { minor: 0 };
    /// The newest version served.
    pub const MAX: ApiVersion = ApiVersion { minor: 71 };
    /// 3.7: every listed service carries `cluster`.
    pub const CLUSTER: ApiVersion = ApiVersion { minor: 7 };
    /// 3.49: `cinder-volume` rows carry `backend_state`.
    pub const BACKEND_STATE: ApiVersion = ApiVersion { minor: 49 };

    /// Version `3.minor`, whether served or not.
    pub const fn new(minor: u32) -> Self {
        Self { minor }
    }

    /// The minor part.
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// Whether this version is at least `other` (Cinder's `matches(other)`).
    pub fn at_least(self, other: ApiVersion) -> bool {
        self >= other
    }

    /// The value of the response header: `volume 3.N`.
    pub fn header_value(self) -> String {
        format!("{SERVICE} {self}")
    }

    /// The version a request asks for, from every `OpenStack-API-Version` header it carries.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut values = Vec::new();
        for value in headers.get_all(HEADER) {
            let text = value.to_str().map_err(|_| {
                ApiError::BadRequest(format!(
                    "The {HEADER} header must be ASCII text like '{SERVICE} 3.0'."
                ))
            })?;
            values.push(text);
        }
        if values.is_empty() {
            return Ok(Self::MIN);
        }
        Self::parse_header(&values.join(","))
    }

    /// The version named by a header value such as `volume 3.7` or `compute 2.1, volume latest`.
    pub fn parse_header(value: &str) -> Result<Self, ApiError> {
        let mut volume = None;
        for entry in value.split(',') {
            let mut words = entry.split_whitespace();
            let (Some(service), version, rest) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            if !service.eq_ignore_ascii_case(SERVICE) {
                continue;
            }
            match (version, rest) {
                (Some(v), None) => {
                    volume = Some(v);
                    break;
                }
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "API Version String '{}' is of invalid format. Must be of format \
                         MajorNum.MinorNum.",
                        entry.trim()
                    )))
                }
            }
        }
        let Some(version) = volume else {
            return Err(ApiError::BadRequest(format!(
                "The {HEADER} header names no '{SERVICE}' version: send '{SERVICE} 3.N' \
                 (3.0 to {}) or '{SERVICE} latest'.",
                Self::MAX
            )));
        };
        if version.eq_ignore_ascii_case("latest") {
            return Ok(Self::MAX);
        }
        let (major, minor) = split_version(version).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "API Version String {version} is of invalid format. Must be of format \
                 MajorNum.MinorNum."
            ))
        })?;
        let served = major == u64::from(Self::MAJOR)
            && u32::try_from(minor).is_ok_and(|m| m <= Self::MAX.minor);
        if !served {
            return Err(ApiError::NotAcceptable(format!(
                "Version {version} is not supported by the API. Minimum is {} and maximum is {}.",
                Self::MIN,
                Self::MAX
            )));
        }
        Ok(Self::new(u32::try_from(minor).unwrap_or(0)))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", Self::MAJOR, self.minor)
    }
}

/// Splits `MAJOR.MINOR` where both are decimal numbers without leading zeros (a lone `0` is
/// allowed for the minor, as in Cinder's `^([1-9]\d*)\.([1-9]\d*|0)$`). Numbers too large
/// for `u64` saturate: they are well formed, just not served.
fn split_version(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.split_once('.')?;
    let number = |s: &str, zero_ok: bool| -> Option<u64> {
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.starts_with('0') && !(zero_ok && s == "0");
        if !digits || leading_zero {
            return None;
        }
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    Some((number(major, false)?, number(minor, true)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<u32, u16> {
        ApiVersion::parse_header(v)
            .map(ApiVersion::minor)
            .map_err(|e| e.status().as_u16())
    }

    /// Well-formed versions within 3.0..=3.71 are accepted; `latest` is 3.71.
    #[test]
    fn accepts_served_versions() {
        assert_eq!(parse("volume 3.0"), Ok(0));
        assert_eq!(parse("volume 3.71"), Ok(71));
        assert_eq!(parse("volume latest"), Ok(71));
        assert_eq!(parse("  volume   3.7 "), Ok(7));
        assert_eq!(parse("compute 2.1, volume 3.49"), Ok(49));
        assert_eq!(parse("Volume 3.10"), Ok(10));
    }

    /// A header without a `volume` entry, or a malformed version, is a 400; a well-formed
    /// version outside the served range is a 406.
    #[test]
    fn refuses_bad_versions() {
        for bad in [
            "compute 2.1",
            "",
            "volume",
            "volume 3",
            "volume 3.07",
            "volume 03.1",
            "volume x.y",
            "volume 3.1.2",
            "volume 3.1 extra",
            "volume -3.1",
        ] {
            assert_eq!(parse(bad), Err(400), "{bad:?} is malformed");
        }
        for unserved in [
            "volume 3.72",
            "volume 2.0",
            "volume 4.0",
            "volume 3.99999999999999999999",
        ] {
            assert_eq!(parse(unserved), Err(406), "{unserved:?} is not served");
        }
    }

    /// No header at all means 3.0.
    #[test]
    fn absent_header_is_the_minimum() {
        assert_eq!(
            ApiVersion::from_headers(&HeaderMap::new()).ok(),
            Some(ApiVersion::MIN)
        );
        assert_eq!(ApiVersion::MAX.header_value(), "volume 3.71");
    }
}
