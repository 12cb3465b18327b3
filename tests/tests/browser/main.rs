//! The dashboard (`/ui/`) in a real headless Chromium, against a three-node process cluster:
//! what the page lists, how it follows the event stream without reloading, and what its
//! buttons do. Each test saves a screenshot under `target/test-artifacts/browser/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian packages `chromium` and
//! `chromium-driver`; `scripts/test` installs them).

mod driver;
mod page;
mod t10_services;
mod t20_actions;
mod t30_zones;
mod t40_scale;
