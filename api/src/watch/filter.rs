//! The query of `GET /v1/events` and the filter it makes.

use std::collections::HashSet;

use registry_client::events::EventKind;
use registry_storage::events::{Event, Subject};
use serde::Deserialize;

use super::convert;
use crate::error::ApiError;

/// `?since=POS&host=H&binary=B&zone=Z&kinds=down,up`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// Events after this position (`INDEX` or `INDEX-SEQ`).
    pub since: Option<String>,
    /// Only events of services on this host.
    pub host: Option<String>,
    /// Only events of services of this binary.
    pub binary: Option<String>,
    /// Only events of this availability zone (its services' and its own).
    pub zone: Option<String>,
    /// Only events of these kinds, comma-separated.
    pub kinds: Option<String>,
}

/// Which events a stream sends.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    host: Option<String>,
    binary: Option<String>,
    zone: Option<String>,
    kinds: Option<HashSet<EventKind>>,
}

impl EventFilter {
    /// The filter of `query`; an unknown kind is a 400 naming the known ones.
    pub fn of(query: &WatchQuery) -> Result<Self, ApiError> {
        let kinds = match &query.kinds {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| {
                        EventKind::parse(k).ok_or_else(|| {
                            let known: Vec<&str> = EventKind::ALL.iter().map(|(_, n)| *n).collect();
                            ApiError::BadRequest(format!(
                                "unknown event kind '{}' in kinds; known kinds: {}",
                                k.chars().take(64).collect::<String>(),
                                known.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<HashSet<_>, _>>()?,
            ),
        };
        Ok(Self {
            host: query.host.clone(),
            binary: query.binary.clone(),
            zone: query.zone.clone(),
            kinds,
        })
    }

    /// Whether `e` passes. A host or binary filter lets no zone event through.
    pub fn matches(&self, e: &Event) -> bool {
        if self
            .kinds
            .as_ref()
            .is_some_and(|k| !k.contains(&convert::kind(e.kind)))
        {
            return false;
        }
        if self.zone.as_ref().is_some_and(|z| *z != e.zone) {
            return false;
        }
        match &e.subject {
            Subject::Service { key, .. } => {
                self.host.as_ref().is_none_or(|h| **h == *key.host)
                    && self.binary.as_ref().is_none_or(|b| **b == *key.binary)
            }
            Subject::Zone { .. } => self.host.is_none() && self.binary.is_none(),
        }
    }
}
