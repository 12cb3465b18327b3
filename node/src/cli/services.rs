//! `service-list`, and the service table every service command prints.

use chrono::{DateTime, Utc};
use clap::Args;
use comfy_table::{ContentLineStyle, LineStyle, Table, TableStyle};
use registry_api::wire::{Consistency, ServiceOut};

use super::{CliError, GlobalArgs};

/// Arguments of `service-list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only the services of this host (exact match).
    #[arg(long)]
    pub host: Option<String>,
    /// Only the services of this binary (exact match).
    #[arg(long)]
    pub binary: Option<String>,
    /// Also show the report count, forced down, frozen, who made the latest administrative
    /// change, and the record id.
    #[arg(long)]
    pub detailed: bool,
    /// Print the services as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the answering node's own state, without confirming with the leader (answers
    /// even without a quorum; may be behind).
    #[arg(long)]
    pub stale: bool,
}

/// Runs `service-list`.
pub async fn list(g: &GlobalArgs, args: &ListArgs) -> Result<String, CliError> {
    let consistency = if args.stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    };
    let out = g
        .client()?
        .services(args.host.as_deref(), args.binary.as_deref(), consistency)
        .await?;
    if args.json {
        let mut text = serde_json::to_string_pretty(&out.services)
            .map_err(|e| CliError::Invalid(format!("cannot encode the list as JSON: {e}")))?;
        text.push('\n');
        return Ok(text);
    }
    let columns = if args.detailed {
        DETAILED_COLUMNS
    } else {
        LIST_COLUMNS
    };
    Ok(render(&out.services, columns))
}

/// A column of the service table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The binary.
    Binary,
    /// The host.
    Host,
    /// The availability zone.
    Zone,
    /// `enabled` or `disabled`.
    Status,
    /// `up` or `down`.
    State,
    /// The latest heartbeat or administrative change, whichever is newer (as Cinder).
    UpdatedAt,
    /// The cluster name.
    Cluster,
    /// Why the service was disabled.
    DisabledReason,
    /// Heartbeats counted.
    ReportCount,
    /// Forced down by an operator.
    ForcedDown,
    /// Frozen.
    Frozen,
    /// Who made the latest administrative change.
    ModifiedBy,
    /// The record id.
    Id,
}

/// The columns of `cinder service-list` (3.7 and later).
pub const LIST_COLUMNS: &[Column] = &[
    Column::Binary,
    Column::Host,
    Column::Zone,
    Column::Status,
    Column::State,
    Column::UpdatedAt,
    Column::Cluster,
    Column::DisabledReason,
];

/// Those of `service-list --detailed`.
pub const DETAILED_COLUMNS: &[Column] = &[
    Column::Binary,
    Column::Host,
    Column::Zone,
    Column::Status,
    Column::State,
    Column::UpdatedAt,
    Column::Cluster,
    Column::DisabledReason,
    Column::ReportCount,
    Column::ForcedDown,
    Column::Frozen,
    Column::ModifiedBy,
    Column::Id,
];

impl Column {
    /// The column's header.
    pub fn header(self) -> &'static str {
        match self {
            Column::Binary => "Binary",
            Column::Host => "Host",
            Column::Zone => "Zone",
            Column::Status => "Status",
            Column::State => "State",
            Column::UpdatedAt => "Updated At",
            Column::Cluster => "Cluster",
            Column::DisabledReason => "Disabled Reason",
            Column::ReportCount => "Report Count",
            Column::ForcedDown => "Forced Down",
            Column::Frozen => "Frozen",
            Column::ModifiedBy => "Modified By",
            Column::Id => "Id",
        }
    }

    /// The cell of `s` in this column; `-` stands for null.
    pub fn cell(self, s: &ServiceOut) -> String {
        let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
        match self {
            Column::Binary => s.binary.clone(),
            Column::Host => s.host.clone(),
            Column::Zone => s.availability_zone.clone(),
            Column::Status => s.status.as_str().into(),
            Column::State => s.state.as_str().into(),
            Column::UpdatedAt => {
                or_dash(s.updated_at.max(s.modified_at).map(cinder_time).as_deref())
            }
            Column::Cluster => or_dash(s.cluster_name.as_deref()),
            Column::DisabledReason => or_dash(s.disabled_reason.as_deref()),
            Column::ReportCount => s.report_count.to_string(),
            Column::ForcedDown => s.forced_down.to_string(),
            Column::Frozen => s.frozen.to_string(),
            Column::ModifiedBy => or_dash(s.modified_by.as_deref()),
            Column::Id => s.id.to_string(),
        }
    }
}

/// Cinder's time format: naive UTC with microseconds, `2012-10-29T13:42:05.000000`.
pub fn cinder_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The services as a table of `columns`, one row per service, ending with a newline.
pub fn render(services: &[ServiceOut], columns: &[Column]) -> String {
    let mut table = new_table();
    table.set_header(columns.iter().map(|c| c.header()));
    for s in services {
        table.add_row(columns.iter().map(|c| c.cell(s)));
    }
    format!("{table}\n")
}

/// The table style of the OpenStack clients (prettytable's default): ASCII borders, one
/// rule under the header, none between rows.
const PRETTY: TableStyle = TableStyle::new()
    .top_border(LineStyle::new('+', '-', '+', '+'))
    .header_lines(ContentLineStyle::new('|', '|', '|'))
    .header_separator(LineStyle::new('+', '-', '+', '+'))
    .content_lines(ContentLineStyle::new('|', '|', '|'))
    .bottom_border(LineStyle::new('+', '-', '+', '+'));

/// An empty table in the tool's style, never wrapped to a terminal's width.
pub fn new_table() -> Table {
    let mut table = Table::new();
    table.load_style(PRETTY);
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use registry_api::wire::{State, Status};

    fn service() -> ServiceOut {
        let t = Utc
            .with_ymd_and_hms(2012, 10, 29, 13, 42, 5)
            .single()
            .expect("time");
        ServiceOut {
            id: 7,
            host: "host-a@lvm".into(),
            binary: "cinder-volume".into(),
            topic: "cinder-volume".into(),
            report_count: 3,
            state: State::Up,
            status: Status::Disabled,
            disabled: true,
            disabled_reason: Some("maintenance".into()),
            availability_zone: "nova".into(),
            created_at: t,
            updated_at: Some(t),
            modified_at: None,
            modified_by: None,
            rpc_current_version: None,
            object_current_version: None,
            replication_status: "disabled".into(),
            frozen: false,
            active_backend_id: None,
            cluster_name: None,
            forced_down: false,
        }
    }

    #[test]
    fn table_has_cinder_columns_and_dashes_for_null() {
        let text = render(&[service()], LIST_COLUMNS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            5,
            "border, header, rule, one row, border:\n{text}"
        );
        let header: Vec<&str> = lines[1].split('|').map(str::trim).collect();
        assert_eq!(
            header,
            [
                "",
                "Binary",
                "Host",
                "Zone",
                "Status",
                "State",
                "Updated At",
                "Cluster",
                "Disabled Reason",
                ""
            ]
        );
        let row: Vec<&str> = lines[3].split('|').map(str::trim).collect();
        assert_eq!(
            row,
            [
                "",
                "cinder-volume",
                "host-a@lvm",
                "nova",
                "disabled",
                "up",
                "2012-10-29T13:42:05.000000",
                "-",
                "maintenance",
                ""
            ]
        );
    }

    #[test]
    fn updated_at_shows_the_newer_of_heartbeat_and_change() {
        let mut s = service();
        let later = s.created_at + chrono::Duration::seconds(30);
        s.modified_at = Some(later);
        assert_eq!(Column::UpdatedAt.cell(&s), cinder_time(later));
        s.updated_at = None;
        s.modified_at = None;
        assert_eq!(Column::UpdatedAt.cell(&s), "-");
    }
}
