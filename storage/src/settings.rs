//! The cluster-wide settings that change what is derived from the log: how long a service
//! may stay silent and still be `up`, and the share of a zone's services down that makes it
//! disrupted. They travel in the log ([`crate::Command::Settings`]), so every node judges
//! liveness and derives events with the same values, whatever its own file says.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kubernetes' default `unhealthy-zone-threshold`, in thousandths.
pub const DEFAULT_UNHEALTHY_ZONE_PERMILLE: u16 = 550;

/// The liveness settings as the log carries them (integers, so that every node compares them
/// exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LivenessSettings {
    /// `service_down_time`, in milliseconds (already corrected to 2.5 × `report_interval`
    /// when it was not above it, as Cinder does, by whoever proposed it).
    pub service_down_time_ms: u64,
    /// `unhealthy_zone_threshold`, in thousandths (0 to 1000).
    pub unhealthy_zone_permille: u16,
}

impl LivenessSettings {
    /// Settings of `service_down_time` and `unhealthy_zone_threshold` (a fraction, rounded to
    /// thousandths and kept within 0 to 1).
    pub fn new(service_down_time: Duration, unhealthy_zone_threshold: f64) -> Self {
        let permille = (unhealthy_zone_threshold.clamp(0.0, 1.0) * 1000.0).round() as u16;
        Self {
            service_down_time_ms: u64::try_from(service_down_time.as_millis()).unwrap_or(u64::MAX),
            unhealthy_zone_permille: permille,
        }
    }

    /// `service_down_time`.
    pub fn service_down_time(&self) -> Duration {
        Duration::from_millis(self.service_down_time_ms)
    }

    /// `service_down_time` as a signed duration (saturated).
    pub fn down_after(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.service_down_time()).unwrap_or(chrono::Duration::MAX)
    }

    /// `unhealthy_zone_threshold` as a fraction.
    pub fn unhealthy_zone_threshold(&self) -> f64 {
        f64::from(self.unhealthy_zone_permille) / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_kept_in_thousandths() {
        let s = LivenessSettings::new(Duration::from_secs(60), 0.55);
        assert_eq!(s.unhealthy_zone_permille, 550);
        assert_eq!(s.service_down_time_ms, 60_000);
        assert!((s.unhealthy_zone_threshold() - 0.55).abs() < 1e-9);
        assert_eq!(
            LivenessSettings::new(Duration::ZERO, 7.0).unhealthy_zone_permille,
            1000
        );
        assert_eq!(
            LivenessSettings::new(Duration::ZERO, -1.0).unhealthy_zone_permille,
            0
        );
        assert_eq!(
            LivenessSettings::new(Duration::MAX, f64::NAN).service_down_time_ms,
            u64::MAX
        );
    }
}
