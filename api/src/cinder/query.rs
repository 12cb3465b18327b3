//! The query string of `GET /v3/os-services`.
//!
//! `host` and `binary` are exact-match filters, URL-decoded (`node1%40lvm` is `node1@lvm`;
//! cinderclient sends `@` as is, openstackclient encodes it); an empty value filters nothing,
//! as in Cinder. `consistency=linearizable|stale` is the registry's own read level.
//! Every other key is ignored, as Cinder ignores keys its index does not know (clients add
//! their own, and refusing them would break unchanged tooling). A key given twice counts
//! with its last value.

use crate::error::ApiError;
use crate::wire::{Consistency, ServicesQuery};

/// The filters and read level of a list request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Only services on this host.
    pub host: Option<String>,
    /// Only services of this binary.
    pub binary: Option<String>,
    /// How fresh the list must be.
    pub consistency: Consistency,
}

impl ListQuery {
    /// Parses a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::BadRequest(format!("Invalid query string: {e}.")))?;
        let mut q = ListQuery::default();
        for (key, value) in pairs {
            match key.as_str() {
                "host" => q.host = Some(value).filter(|v| !v.is_empty()),
                "binary" => q.binary = Some(value).filter(|v| !v.is_empty()),
                "consistency" => {
                    q.consistency = match value.as_str() {
                        "linearizable" => Consistency::Linearizable,
                        "stale" => Consistency::Stale,
                        other => {
                            return Err(ApiError::BadRequest(format!(
                                "Invalid consistency '{other}': use 'linearizable' (the \
                                 default) or 'stale'."
                            )))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// The same request in the native API's terms.
    pub fn native(&self) -> ServicesQuery {
        ServicesQuery {
            host: self.host.clone(),
            binary: self.binary.clone(),
            consistency: Some(self.consistency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filters are decoded, empty ones dropped, unknown keys ignored, bad levels refused.
    #[test]
    fn parses_like_cinder() {
        let q = ListQuery::parse("host=node1%40lvm&binary=cinder-volume&withreplication=True")
            .unwrap_or_default();
        assert_eq!(q.host.as_deref(), Some("node1@lvm"));
        assert_eq!(q.binary.as_deref(), Some("cinder-volume"));
        assert_eq!(q.consistency, Consistency::Linearizable);
        let q = ListQuery::parse("host=node1@lvm&binary=&consistency=stale").unwrap_or_default();
        assert_eq!(q.host.as_deref(), Some("node1@lvm"));
        assert_eq!(q.binary, None);
        assert_eq!(q.consistency, Consistency::Stale);
        assert_eq!(ListQuery::parse("").ok(), Some(ListQuery::default()));
        assert!(ListQuery::parse("consistency=eventual").is_err());
    }
}
