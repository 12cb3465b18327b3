//! Version discovery: the document answered at `GET /` (300 Multiple Choices) and at
//! `GET /v3` and `GET /v3/` (200). cinderclient reads `versions[*].version` and
//! `min_version` from `GET /` to pick its microversion; openstackclient discovers through
//! `/v3/`.

use serde::Serialize;

use super::microversion::ApiVersion;

/// When the v3 API last changed, as Cinder reports it.
const UPDATED: &str = "2016-02-08T12:20:21Z";
/// Where the API is documented.
const DOCS: &str = "https://docs.openstack.org/";

/// `{"versions": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionsDoc {
    /// The one version served, v3.
    pub versions: Vec<VersionDoc>,
}

/// One API version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionDoc {
    /// `v3.0`.
    pub id: &'static str,
    /// `CURRENT`.
    pub status: &'static str,
    /// The newest microversion served.
    pub version: String,
    /// The oldest microversion served.
    pub min_version: String,
    /// When the API last changed.
    pub updated: &'static str,
    /// Documentation and self links.
    pub links: Vec<Link>,
    /// The media types the API speaks.
    #[serde(rename = "media-types")]
    pub media_types: Vec<MediaType>,
}

/// A link of a version document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// `describedby` or `self`.
    pub rel: &'static str,
    /// `text/html` for the documentation link.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Where it points.
    pub href: String,
}

/// A media type of a version document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaType {
    /// `application/json`.
    pub base: &'static str,
    /// The vendor type.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The versions document, with the `self` link built from `scheme` (`https` on a node with
/// TLS) and the request's `Host` header (`localhost` when the request has none).
pub fn versions_doc(scheme: &str, host: Option<&str>) -> VersionsDoc {
    let host = host
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    VersionsDoc {
        versions: vec![VersionDoc {
            id: "v3.0",
            status: "CURRENT",
            version: ApiVersion::MAX.to_string(),
            min_version: ApiVersion::MIN.to_string(),
            updated: UPDATED,
            links: vec![
                Link {
                    rel: "describedby",
                    kind: Some("text/html"),
                    href: DOCS.into(),
                },
                Link {
                    rel: "self",
                    kind: None,
                    href: format!("{scheme}://{host}/v3/"),
                },
            ],
            media_types: vec![MediaType {
                base: "application/json",
                kind: "application/vnd.openstack.volume+json;version=3",
            }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document names 3.0..3.71 and links to `http://HOST/v3/`.
    #[test]
    fn document_names_the_range_and_self() {
        let doc =
            serde_json::to_value(versions_doc("http", Some("10.0.0.1:8776"))).unwrap_or_default();
        let v = &doc["versions"][0];
        assert_eq!(v["version"], "3.71");
        assert_eq!(v["min_version"], "3.0");
        assert_eq!(v["links"][1]["href"], "http://10.0.0.1:8776/v3/");
        assert_eq!(v["links"][1]["rel"], "self");
        assert_eq!(v["media-types"][0]["base"], "application/json");
    }
}
