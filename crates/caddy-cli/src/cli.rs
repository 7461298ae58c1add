//! Command-line grammar (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;
use crate::output::parse_time;

/// Default configuration file when neither `--config` nor `CADDY_CONFIG` is given.
pub const DEFAULT_CONFIG: &str = "./.caddy-dev/client.toml";

/// Command-line client of a CADDY cluster.
#[derive(Debug, Parser)]
#[command(name = "caddyctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Client configuration file [env: CADDY_CONFIG; default: ./.caddy-dev/client.toml].
    #[arg(long, global = true, value_name = "FILE", env = "CADDY_CONFIG", hide_env = true)]
    pub config: Option<PathBuf>,
    /// Talk to this node (host:port of its client listener) instead of the config file's endpoints;
    /// repeat it for several. The CA and the credential still come from the config file [env:
    /// CADDY_ENDPOINTS=host:port,host:port].
    #[arg(
        long = "endpoint",
        global = true,
        value_name = "HOST:PORT",
        env = "CADDY_ENDPOINTS",
        hide_env = true,
        value_delimiter = ',',
        value_parser = parse_endpoint
    )]
    pub endpoints: Vec<String>,
    /// Machine-readable JSON output; a failure is written to stdout too, as {"error": {...}}.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bound on the whole command, retries and waits included (e.g. "10s", "500ms"); a watch ends
    /// (successfully) when it runs out. Default: each request is bounded by the config file's
    /// request timeout, a render wait by --wait-timeout, a watch not at all.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Tenant to act on [env: CADDY_TENANT; default: the credential's own, or `tenant` of the config file].
    #[arg(long, global = true, value_name = "TENANT", env = "CADDY_TENANT", hide_env = true)]
    pub tenant: Option<String>,
    /// Credentials file written by `login` [env: CADDY_CREDENTIALS; default: `credentials` next to the
    /// config file, used when it exists].
    #[arg(long, global = true, value_name = "FILE", env = "CADDY_CREDENTIALS", hide_env = true)]
    pub credentials: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The configuration file to read.
    pub fn config_path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// The credentials file: `--credentials`, else `credentials` in the
    /// directory of the configuration file.
    pub fn credentials_path(&self) -> PathBuf {
        match &self.credentials {
            Some(path) => path.clone(),
            None => match self.config_path().parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(CREDENTIALS_FILE),
                _ => PathBuf::from(CREDENTIALS_FILE),
            },
        }
    }

    /// The tenant named on the command line: a `tenant` subcommand's ID
    /// argument, else `--tenant` (empty strings count as absent).
    pub fn tenant_override(&self) -> Option<String> {
        self.command.tenant_arg().or(self.tenant.as_deref()).filter(|t| !t.is_empty()).map(str::to_owned)
    }
}

/// Name of the credentials file next to the configuration file.
pub const CREDENTIALS_FILE: &str = "credentials";

/// Top-level command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster membership, status and maintenance.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Key-value operations.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Logs in with email and password and saves the session to the credentials file.
    Login(LoginArgs),
    /// Ends the saved session and removes the credentials file.
    Logout,
    /// Tenants: create, list, inspect, change, suspend, delete (operators).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Users of a tenant.
    #[command(subcommand)]
    User(UserCommand),
    /// Invitations to join a tenant.
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Roles and their grants.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Teams and their members.
    #[command(subcommand)]
    Team(TeamCommand),
    /// API keys.
    #[command(subcommand, name = "apikey")]
    ApiKey(ApiKeyCommand),
    /// Login sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// The tamper-evident audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// CAD documents: create, edit with JSON batches, export, history, tags, watch.
    #[command(subcommand)]
    Doc(DocCommand),
    /// Files and folders: upload, download, list, move, version, share, link, trash.
    #[command(subcommand)]
    File(FileCommand),
    /// The tenant's storage.
    #[command(subcommand)]
    Storage(StorageCommand),
    /// Render a CAD document to a PNG on the cluster's render workers; list, show and cancel jobs.
    Render(RenderArgs),
}

/// `render DOC ...` submits a job; `render jobs|show|cancel` manage them.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, disable_version_flag = true)]
pub struct RenderArgs {
    #[command(subcommand)]
    pub command: Option<RenderCommand>,
    #[command(flatten)]
    pub submit: RenderSubmit,
}

/// What to render.
#[derive(Debug, Args)]
pub struct RenderSubmit {
    /// The document (doc-N).
    #[arg(required = true)]
    pub doc: Option<String>,
    /// Its change number (default: the latest).
    #[arg(long = "version", value_name = "N")]
    pub version: Option<u64>,
    /// Image size, WIDTHxHEIGHT.
    #[arg(long, value_name = "WxH", default_value = "1024x768", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Only these layers (ids, comma-separated); default: the visible ones.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Show this window of the drawing, X0,Y0,X1,Y1 in drawing units (default: fit everything).
    #[arg(long, value_name = "X0,Y0,X1,Y1", value_delimiter = ',', allow_negative_numbers = true)]
    pub window: Option<Vec<f64>>,
    /// Rotate the view, degrees counter-clockwise.
    #[arg(long, value_name = "DEG", default_value_t = 0.0, allow_negative_numbers = true)]
    pub rotate: f64,
    /// Background colour, #rrggbb or #rrggbbaa.
    #[arg(long, value_name = "COLOR", default_value = "#ffffff", value_parser = parse_color)]
    pub background: [u8; 4],
    /// Wait for the job and save the image here (implies --wait).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Wait until the job is done (or failed).
    #[arg(long)]
    pub wait: bool,
    /// Longest wait (a shorter --timeout, which bounds the whole command, ends it first).
    #[arg(long = "wait-timeout", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
}

/// Render job management.
#[derive(Debug, Subcommand)]
pub enum RenderCommand {
    /// The tenant's render jobs, newest first.
    Jobs {
        /// How many.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// One job in detail.
    Show {
        /// The job (job-N).
        job: String,
    },
    /// Cancels a queued or running job.
    Cancel {
        /// The job (job-N).
        job: String,
    },
    /// The tenant's automatic thumbnails (every committed document change
    /// gets one): shows the setting, or turns them on or off (docs:admin).
    Thumbnails {
        /// `on` or `off`; without it, shows the setting.
        #[arg(value_parser = ["on", "off"])]
        state: Option<String>,
        /// Thumbnail size, WIDTHxHEIGHT (with `on`).
        #[arg(long, value_name = "WxH", default_value = "256x192", value_parser = parse_size)]
        size: (u32, u32),
    },
    /// A document's newest thumbnail: shows its job, or saves its PNG.
    Thumbnail {
        /// The document (doc-N).
        doc: String,
        /// Save the PNG here.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
    },
}

/// A positive duration for `--timeout`.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("--timeout must be positive".into()),
        d => Ok(d),
    }
}

/// `host:port` of a client listener, as the config file's `endpoints` hold.
fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not HOST:PORT")),
    }
}

/// `1024x768` → (1024, 768).
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT"))?;
    let side = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{text:?} is not WIDTHxHEIGHT"));
    Ok((side(w)?, side(h)?))
}

/// `#rrggbb` or `#rrggbbaa` → RGBA.
pub fn parse_color(text: &str) -> Result<[u8; 4], String> {
    let hex = text.strip_prefix('#').unwrap_or(text);
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16);
    match hex.len() {
        6 | 8 => {
            let alpha = if hex.len() == 8 { byte(6) } else { Ok(255) };
            match (byte(0), byte(2), byte(4), alpha) {
                (Ok(r), Ok(g), Ok(b), Ok(a)) => Ok([r, g, b, a]),
                _ => Err(format!("{text:?} is not a #rrggbb colour")),
            }
        }
        _ => Err(format!("{text:?} is not a #rrggbb colour")),
    }
}

/// The example in `doc apply --help` (checked by a unit test).
#[cfg(test)]
pub const DOC_APPLY_EXAMPLE: &str = r##"[{"op": "add", "kind": "line", "layer": "0", "from": [0, 0], "to": [100, 0]}, {"op": "add", "kind": "circle", "center": [50, 50], "radius": 10}]"##;

/// Output formats of `doc export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The resolved model (layers, entities, hierarchy, problems) as JSON.
    Json,
    /// An SVG drawing (layers, colours, line weights, text, dimensions).
    Svg,
}

/// `caddyctl doc ...`
#[derive(Debug, Subcommand)]
pub enum DocCommand {
    /// Creates a document; prints its id.
    Create {
        /// Name.
        name: String,
        /// Drawing units: mm (default), cm, m, in, ft or unitless.
        #[arg(long)]
        units: Option<String>,
    },
    /// Lists the tenant's documents.
    List {
        /// Include documents in the trash.
        #[arg(long)]
        deleted: bool,
        /// Page through every document.
        #[arg(long)]
        all: bool,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// List documents after this id.
        #[arg(long)]
        after: Option<String>,
    },
    /// Shows a document's record and a summary of its drawing.
    Get {
        /// Document id (doc-N).
        id: String,
    },
    /// Renames a document.
    Rename {
        /// Document id.
        id: String,
        /// New name.
        name: String,
    },
    /// Moves a document to the trash.
    Delete {
        /// Document id.
        id: String,
    },
    /// Brings a document back from the trash.
    Restore {
        /// Document id.
        id: String,
    },
    /// Applies a JSON batch of edit operations as one change (all or nothing).
    #[command(after_help = concat!(
        "FILE holds an array of operations (or {\"ops\": [...]}), for example:\n  ",
        r##"[{"op": "add", "kind": "line", "layer": "0", "from": [0, 0], "to": [100, 0]}, {"op": "add", "kind": "circle", "center": [50, 50], "radius": 10}]"##,
        "\nOperations: add (kind line|polyline|circle|arc|ellipse|spline|text|linear_dim|aligned_dim|radial_dim|\n",
        "angular_dim|hatch|insert), set, delete, restore, text_insert, text_delete, bring_to_front, send_to_back,\n",
        "set_meta, add_layer, set_layer, delete_layer, restore_layer, add_group, add_block, move_node,\n",
        "rename_node, set_block_base, group_add, group_remove, delete_node, restore_node.\n",
        "The format is documented in crates/caddy-doc/src/ops.rs (EditOp)."
    ))]
    Apply {
        /// Document id.
        id: String,
        /// JSON file of operations (`-`: standard input).
        file: PathBuf,
    },
    /// Writes the drawing as JSON or SVG, now or at a past change.
    Export {
        /// Document id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "svg")]
        format: ExportFormat,
        /// A past change number, a tag, or a hex version.
        #[arg(long)]
        at: Option<String>,
        /// Output file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Lists committed changes: author, time, size, version.
    History {
        /// Document id.
        id: String,
        /// Page size.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Page through the whole history.
        #[arg(long)]
        all: bool,
    },
    /// Names the current version (or change --at).
    Tag {
        /// Document id.
        id: String,
        /// Tag name (letters, digits, '.', '_', '-').
        name: String,
        /// Change number to tag.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Lists a document's tags.
    Tags {
        /// Document id.
        id: String,
    },
    /// Prints committed updates and presence as they arrive (Ctrl-C stops; so does --timeout, successfully).
    Watch {
        /// Start from this hex version (default: the whole document first).
        #[arg(long)]
        since: Option<String>,
        /// Document id.
        id: String,
    },
}

/// Access granted by `file share`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShareAccess {
    /// Download and list versions.
    Read,
    /// Also upload new versions, rename, move, tag and restore versions.
    Write,
}

/// A point in time for `file search`: an absolute time, or a duration ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Milliseconds since the epoch.
    At(u64),
    /// This long before now.
    Ago(Duration),
}

impl When {
    /// Milliseconds since the epoch, `Ago` counted back from `now_ms`.
    pub fn resolve(self, now_ms: u64) -> u64 {
        match self {
            When::At(ms) => ms,
            When::Ago(d) => now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Parses a [`When`]: a duration with a unit (`7d`, `1h30m`) means that
/// long ago; else a time as [`parse_time`] reads it (milliseconds since the
/// epoch, RFC 3339, or a date).
pub fn parse_when(text: &str) -> Result<When, String> {
    match parse_time(text) {
        Ok(ms) => Ok(When::At(ms)),
        Err(time_error) => match parse_duration(text) {
            Ok(d) => Ok(When::Ago(d)),
            Err(_) => Err(format!(
                "invalid time {:?}: use a duration ago (7d, 12h), RFC 3339, a date, or milliseconds since the epoch \
                 ({time_error})",
                text.trim()
            )),
        },
    }
}

/// Help shared by the `file search` time flags.
const WHEN_HELP: &str = "A duration with a unit means that long ago (`30m`, `12h`, `7d`); else a time: RFC 3339 \
                         (`2024-05-01T12:00:00Z`), a date (`2024-05-01`, midnight UTC) or milliseconds since the epoch.";

/// `caddyctl file ...`; FILE is `file-N`, FOLDER is `folder-N` (or `root`).
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Uploads a local file as a new file (or as a new version of one); prints its record.
    Upload {
        /// Local file to upload.
        path: PathBuf,
        /// Folder to put the new file in (`folder-N`; default: the root).
        #[arg(long, value_name = "FOLDER", conflicts_with = "as_version_of")]
        folder: Option<String>,
        /// Name of the new file (default: the local file's name).
        #[arg(long, conflicts_with = "as_version_of")]
        name: Option<String>,
        /// Upload a new version of this file (`file-N`) instead of a new file.
        #[arg(long, value_name = "FILE")]
        as_version_of: Option<String>,
        /// Media type, e.g. `image/vnd.dxf` (default: guessed from the name).
        #[arg(long = "type", value_name = "MEDIA", conflicts_with = "as_version_of")]
        media_type: Option<String>,
        /// Tag of the new file (repeatable; letters, digits, '.', '_', '-').
        #[arg(long = "tag", value_name = "TAG", conflicts_with = "as_version_of")]
        tags: Vec<String>,
    },
    /// Downloads a file (or, with --link, a share link's file, no login needed).
    #[command(disable_version_flag = true)]
    Download {
        /// File to download (`file-N`; omit with --link).
        #[arg(required_unless_present = "link", conflicts_with = "link")]
        id: Option<String>,
        /// Where to write: a file path, a directory (the file's name inside it), or `-` for standard
        /// output [default: the file's name in the current directory]. An existing file is replaced.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: Option<PathBuf>,
        /// Version to download (default: the current one).
        #[arg(long = "version", value_name = "N")]
        version: Option<u64>,
        /// First byte to download.
        #[arg(long, value_name = "B", default_value_t = 0)]
        offset: u64,
        /// How many bytes to download (default: to the end).
        #[arg(long, value_name = "B")]
        length: Option<u64>,
        /// Share link token (`cl_...`) to download through, instead of a file id.
        #[arg(long, value_name = "TOKEN")]
        link: Option<String>,
    },
    /// Lists a folder's subfolders and files.
    Ls {
        /// Folder (`folder-N`, or `root`) [default: the root].
        folder: Option<String>,
        /// Everything below the folder, as an indented tree.
        #[arg(long)]
        tree: bool,
    },
    /// Creates a folder.
    Mkdir {
        /// Name of the new folder.
        name: String,
        /// Folder to create it in (`folder-N`; default: the root).
        #[arg(long, value_name = "FOLDER")]
        parent: Option<String>,
    },
    /// Moves a file or folder into another folder.
    Mv {
        /// File or folder to move (`file-N` or `folder-N`).
        id: String,
        /// Destination folder (`folder-N`, or `root`).
        to: String,
    },
    /// Renames a file or folder.
    Rename {
        /// File or folder (`file-N` or `folder-N`).
        id: String,
        /// New name.
        name: String,
    },
    /// Shows a file's or folder's record.
    Info {
        /// File or folder (`file-N` or `folder-N`).
        id: String,
    },
    /// Replaces a file's tags (none given: removes them all).
    Tag {
        /// File (`file-N`).
        file: String,
        /// The new tags (letters, digits, '.', '_', '-').
        tags: Vec<String>,
    },
    /// Lists a file's stored versions, newest first.
    Versions {
        /// File (`file-N`).
        file: String,
    },
    /// Makes an old version current again (stored as a new version).
    RestoreVersion {
        /// File (`file-N`).
        file: String,
        /// Version number to restore.
        #[arg(value_name = "N")]
        number: u64,
    },
    /// Shares a file with a user or a team; prints the file's shares.
    Share {
        /// File (`file-N`).
        file: String,
        /// Who gets access (`user-N` or `team-N`).
        with: String,
        /// What they may do.
        #[arg(long, value_enum)]
        access: ShareAccess,
        /// How long the share lasts, e.g. `1h`, `7d` (default: until unshared).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<Duration>,
    },
    /// Ends a share; prints the remaining shares.
    Unshare {
        /// File (`file-N`).
        file: String,
        /// Whose share ends (`user-N` or `team-N`).
        with: String,
    },
    /// Lists a file's shares.
    Shares {
        /// File (`file-N`).
        file: String,
    },
    /// Creates a share link: anyone with its token can download the file (token shown once).
    Link {
        /// File (`file-N`).
        file: String,
        /// How long the link works, e.g. `1h`, `7d` (default: until removed).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<Duration>,
    },
    /// Removes a share link.
    Unlink {
        /// File (`file-N`).
        file: String,
        /// Link id (as `file links` shows it).
        #[arg(value_name = "LINK_ID")]
        link: u64,
    },
    /// Lists a file's share links (never their tokens).
    Links {
        /// File (`file-N`).
        file: String,
    },
    /// Marks a file as one of your favorites.
    Favorite {
        /// File (`file-N`).
        file: String,
    },
    /// Removes a file from your favorites.
    Unfavorite {
        /// File (`file-N`).
        file: String,
    },
    /// Lists your favorite files.
    Favorites,
    /// Lists the files you recently opened or changed, newest first.
    Recent,
    /// Finds files by name, tag, media type, folder and modification time (all given filters must match).
    #[command(after_help = WHEN_HELP)]
    Search {
        /// Name contains S (case-insensitive).
        #[arg(long, value_name = "S")]
        name: Option<String>,
        /// Has tag T.
        #[arg(long, value_name = "T")]
        tag: Option<String>,
        /// Media type is M, or starts with M when M ends in `/` (e.g. `image/`).
        #[arg(long = "type", value_name = "M")]
        media_type: Option<String>,
        /// Directly in this folder (`folder-N`, or `root`).
        #[arg(long, value_name = "FOLDER")]
        folder: Option<String>,
        /// Modified at or after TIME: a duration ago (`7d`) or a time (RFC 3339, date, ms since the epoch).
        #[arg(long, value_name = "TIME", value_parser = parse_when)]
        modified_after: Option<When>,
        /// Modified before TIME (same forms as --modified-after).
        #[arg(long, value_name = "TIME", value_parser = parse_when)]
        modified_before: Option<When>,
        /// Most files to list.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Moves a file, folder (with its content) or document to the trash.
    Rm {
        /// `file-N`, `folder-N` or `doc-N`.
        id: String,
    },
    /// Lists what is in the trash.
    Trash,
    /// Brings a file, folder or document back from the trash.
    Restore {
        /// `file-N`, `folder-N` or `doc-N`.
        id: String,
    },
    /// Deletes a trashed file, folder or document for good (irreversible).
    Purge {
        /// `file-N`, `folder-N` or `doc-N`.
        id: String,
    },
}

/// `caddyctl storage ...`
#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Shows the tenant's storage use against its quota: files, versions, trash, folders.
    Usage,
}

impl Command {
    /// The tenant ID given as a positional argument of a `tenant` subcommand.
    pub fn tenant_arg(&self) -> Option<&str> {
        match self {
            Command::Tenant(
                TenantCommand::Get { id }
                | TenantCommand::Update { id, .. }
                | TenantCommand::Suspend { id }
                | TenantCommand::Resume { id }
                | TenantCommand::Delete { id, .. }
                | TenantCommand::Usage { id },
            ) => id.as_deref(),
            _ => None,
        }
    }

    /// Whether the command is sent without a credential (the password, the
    /// invitation token or the share link token is the proof).
    pub fn anonymous(&self) -> bool {
        matches!(
            self,
            Command::Login(_)
                | Command::Invite(InviteCommand::Accept { .. })
                | Command::File(FileCommand::Download { link: Some(_), .. })
        )
    }
}

/// Options of `caddyctl login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Email address of the account.
    #[arg(long)]
    pub email: String,
    /// Read the password from the first line of stdin (else from env CADDY_PASSWORD).
    #[arg(long)]
    pub password_stdin: bool,
    /// Session lifetime (default: the server's maximum).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// Quota flags of `tenant create` and `tenant update`.
#[derive(Debug, Default, Clone, Copy, Args)]
pub struct QuotaArgs {
    /// Most users.
    #[arg(long, value_name = "N")]
    pub max_users: Option<u64>,
    /// Most bytes stored.
    #[arg(long, value_name = "N")]
    pub max_storage_bytes: Option<u64>,
    /// Most documents.
    #[arg(long, value_name = "N")]
    pub max_documents: Option<u64>,
    /// Most API keys.
    #[arg(long, value_name = "N")]
    pub max_api_keys: Option<u64>,
    /// Most requests per second.
    #[arg(long, value_name = "N")]
    pub max_rps: Option<u64>,
}

/// `caddyctl tenant ...`; ID defaults to `--tenant`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant.
    Create {
        /// Tenant id (lower-case letters, digits, dashes).
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Plan name (default: the server's, "standard").
        #[arg(long)]
        plan: Option<String>,
        /// Quotas (defaults for the ones not given).
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Lists tenants.
    List {
        /// Only tenants whose id sorts after X.
        #[arg(long, value_name = "X", default_value = "", hide_default_value = true)]
        start_after: String,
        /// Tenants per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Shows a tenant.
    Get {
        /// Tenant id (default: --tenant).
        id: Option<String>,
    },
    /// Changes a tenant's name, plan or quotas.
    Update {
        /// Tenant id (default: --tenant).
        id: Option<String>,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// New plan.
        #[arg(long)]
        plan: Option<String>,
        /// New quotas.
        #[command(flatten)]
        quotas: QuotaArgs,
    },
    /// Suspends a tenant: its credentials stop working.
    Suspend {
        /// Tenant id (default: --tenant).
        id: Option<String>,
    },
    /// Resumes a suspended tenant.
    Resume {
        /// Tenant id (default: --tenant).
        id: Option<String>,
    },
    /// Deletes a tenant and everything it owns.
    Delete {
        /// Tenant id (default: --tenant).
        id: Option<String>,
        /// The tenant id again, to confirm.
        #[arg(long, value_name = "ID")]
        confirm: String,
    },
    /// Shows a tenant's usage against its quotas.
    Usage {
        /// Tenant id (default: --tenant).
        id: Option<String>,
    },
}

/// Output format of `user list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ListFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// CSV: id,email,display_name,disabled,roles (roles separated by `;`).
    Csv,
    /// One JSON document (like --json).
    Json,
}

/// `caddyctl user ...`; USER is `user-N`, `N` or an email address.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user.
    Create {
        /// Email address.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Read an initial password from the first line of stdin (default: none, the user cannot log in yet).
        #[arg(long)]
        password_stdin: bool,
        /// Role granted (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Lists users.
    List {
        /// Only users whose email or name contains S.
        #[arg(long, value_name = "S", default_value = "", hide_default_value = true)]
        search: String,
        /// Only users after this id.
        #[arg(long, value_name = "USER", default_value = "", hide_default_value = true)]
        start_after: String,
        /// Users per page (default 100; 1000 with --all).
        #[arg(long)]
        limit: Option<u32>,
        /// Page through until every user is listed.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Shows a user.
    Get {
        /// User.
        user: String,
    },
    /// Changes a user's email, name or password.
    Update {
        /// User.
        user: String,
        /// New email address.
        #[arg(long)]
        email: Option<String>,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// Read a new password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disables a user (ends their sessions; they cannot log in).
    Disable {
        /// User.
        user: String,
    },
    /// Enables a disabled user.
    Enable {
        /// User.
        user: String,
    },
    /// Deletes a user.
    Delete {
        /// User.
        user: String,
    },
    /// Exports everything stored about a user as JSON (GDPR).
    Export {
        /// User.
        user: String,
        /// Output file (created with mode 0600) instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Erases a user's personal data (irreversible).
    Erase {
        /// User.
        user: String,
        /// Confirms the erasure.
        #[arg(long)]
        yes: bool,
    },
    /// Creates users from a CSV file with header `email,display_name,roles,password`.
    Import {
        /// CSV file (roles separated by `;`; password optional).
        file: PathBuf,
    },
}

/// `caddyctl invite ...`
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Invites someone by email; prints the invitation token once.
    Create {
        /// Email address of the invitee.
        #[arg(long)]
        email: String,
        /// Role granted on acceptance (repeatable).
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// How long the invitation stays valid (default: the server's maximum).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Accepts an invitation, creating the account (no credential needed).
    Accept {
        /// Invitation token (`ci_…`).
        token: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Read the password from the first line of stdin (else from env CADDY_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Exactly one of a user or a team, for role grants.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct GrantTarget {
    /// User (`user-N`, `N` or an email address).
    #[arg(long)]
    pub user: Option<String>,
    /// Team (`team-N` or `N`).
    #[arg(long)]
    pub team: Option<String>,
}

/// `caddyctl role ...`
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Creates (or replaces) a custom role.
    Create {
        /// Role name.
        name: String,
        /// Permission granted, e.g. `kv:read` (several after one flag, or repeated).
        #[arg(long = "permission", value_name = "P", required = true, num_args = 1..)]
        permissions: Vec<String>,
        /// Role whose permissions are included (repeatable).
        #[arg(long = "inherits", value_name = "ROLE", num_args = 1..)]
        inherits: Vec<String>,
        /// Description.
        #[arg(long, default_value = "", hide_default_value = true)]
        description: String,
    },
    /// Lists built-in and custom roles.
    List,
    /// Deletes a custom role.
    Delete {
        /// Role name.
        name: String,
    },
    /// Grants a role to a user or a team.
    Grant {
        /// Role name.
        role: String,
        /// Who receives it.
        #[command(flatten)]
        target: GrantTarget,
    },
    /// Revokes a role from a user or a team.
    Revoke {
        /// Role name.
        role: String,
        /// Who loses it.
        #[command(flatten)]
        target: GrantTarget,
    },
}

/// Exactly one of a user or a sub-team, for team membership.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct TeamMember {
    /// User (`user-N`, `N` or an email address).
    #[arg(long)]
    pub user: Option<String>,
    /// Sub-team (`team-N` or `N`).
    #[arg(long = "team", value_name = "SUB")]
    pub subteam: Option<String>,
}

/// `caddyctl team ...`; TEAM is `team-N` or `N`.
#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Creates a team.
    Create {
        /// Team name.
        name: String,
    },
    /// Lists teams.
    List,
    /// Deletes a team.
    Delete {
        /// Team.
        team: String,
    },
    /// Adds a user or a sub-team to a team.
    Add {
        /// Team.
        team: String,
        /// Who joins.
        #[command(flatten)]
        member: TeamMember,
    },
    /// Removes a user or a sub-team from a team.
    Remove {
        /// Team.
        team: String,
        /// Who leaves.
        #[command(flatten)]
        member: TeamMember,
    },
}

/// `caddyctl apikey ...`; KEY is `key-N` or `N`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Creates an API key; prints it once.
    Create {
        /// Name to recognize the key by.
        #[arg(long)]
        name: String,
        /// Permission the key carries, e.g. `kv:read` (several after one flag, or repeated).
        #[arg(long = "scope", value_name = "P", required = true, num_args = 1..)]
        scopes: Vec<String>,
        /// Lifetime (default: no expiry).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Lists API keys (never their secrets).
    List,
    /// Revokes an API key.
    Revoke {
        /// Key.
        key: String,
    },
    /// Issues a new secret for a key; the old one works for a grace period.
    Rotate {
        /// Key.
        key: String,
        /// How long the old secret keeps working (default: the server's).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<Duration>,
    },
}

/// `caddyctl session ...`
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Lists login sessions.
    List {
        /// Whose sessions (default: your own).
        #[arg(long)]
        user: Option<String>,
    },
    /// Ends one session, or all sessions of a user.
    #[command(group(ArgGroup::new("target").required(true).args(["session", "user"])))]
    Terminate {
        /// Session (`session-N` or `N`).
        #[arg(conflicts_with_all = ["user", "all"])]
        session: Option<String>,
        /// End this user's sessions (with --all).
        #[arg(long, requires = "all")]
        user: Option<String>,
        /// Every session of --user.
        #[arg(long, requires = "user")]
        all: bool,
    },
}

/// `caddyctl audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Lists audit entries.
    List {
        /// Only entries by this actor (`operator`, `user-N`, `key-N`, `system`).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries of this action (`user.create`) or action group (`user`).
        #[arg(long)]
        action: Option<String>,
        /// Only entries at or after this time (RFC 3339, `YYYY-MM-DD HH:MM:SS` UTC, or ms since the epoch).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<u64>,
        /// Only entries at or before this time (same forms as --since).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<u64>,
        /// Only entries after this sequence number.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after_seq: u64,
        /// Entries shown at most (the listing follows the server's pages,
        /// each of which looks at a bounded slice of the chain).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
    /// Writes the trail as JSON lines (one entry per line): the whole kept
    /// chain, or what follows --after-seq (for appending to an archive
    /// before entries are pruned).
    Export {
        /// Output file instead of stdout.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only entries after this sequence number.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after_seq: u64,
    },
    /// Verifies the hash chain (from its checkpoint once pruned); fails
    /// when it is broken.
    Verify,
    /// How long the chain keeps its entries.
    #[command(subcommand)]
    Retention(AuditRetentionCommand),
}

/// `caddyctl audit retention ...`
#[derive(Debug, Subcommand)]
pub enum AuditRetentionCommand {
    /// Shows the chain's retention, checkpoint and size.
    Show,
    /// Gives the chain its own retention (operator only); a value left out
    /// follows the cluster default (`[audit]` in the node configuration),
    /// and leaving out both returns the chain to it.
    Set {
        /// Entries this many days old are pruned.
        #[arg(long, value_name = "N")]
        days: Option<u64>,
        /// At most this many entries are kept (the oldest go first).
        #[arg(long, value_name = "N")]
        max_entries: Option<u64>,
    },
}

/// `caddyctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Shows terms, indexes and every member's role and health.
    Status,
    /// Adds the node whose peer (raft) listener is ADDR.
    AddNode {
        /// Peer address of the new node (host:port).
        addr: String,
        /// Keep the node a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a node from the cluster.
    RemoveNode {
        /// Node id.
        id: u64,
    },
    /// Hands leadership to another voter.
    TransferLeader {
        /// Node id of the new leader.
        id: u64,
    },
    /// Snapshots the state machine and compacts the log.
    Snapshot,
    /// Creates a single-use token with which one new node can enroll
    /// (or lists or revokes tokens).
    JoinToken {
        /// How long the token stays valid (at most 24h).
        #[arg(long, default_value = "15m", value_parser = parse_duration)]
        ttl: Duration,
        /// List the tokens the cluster keeps instead.
        #[arg(long, conflicts_with_all = ["revoke", "ttl"])]
        list: bool,
        /// Revoke a token instead, named by its id or by the token itself.
        #[arg(long, value_name = "ID|TOKEN", conflicts_with = "ttl")]
        revoke: Option<String>,
    },
    /// Gives every member a new key and certificate; old ones are refused.
    RotateCerts,
    /// Streams a consistent backup to a file.
    Backup {
        /// Output file (written as FILE.tmp, then renamed).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
}

/// `caddyctl kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Sets KEY to VALUE.
    Put {
        /// Key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Value (UTF-8).
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Only if the key's mod revision is N (0: only if it does not exist).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Prints the value of KEY.
    Get {
        /// Key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Read from the answering node, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Deletes KEY.
    Del {
        /// Key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Only if the key's mod revision is N.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Lists keys starting with PREFIX.
    List {
        /// Key prefix (empty: every key).
        #[arg(default_value = "", allow_hyphen_values = true)]
        prefix: String,
        /// Keys per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Page through until every key is listed.
        #[arg(long)]
        all: bool,
        /// Read from the answering node, possibly stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Prints changes to keys starting with PREFIX until interrupted (or, successfully, until --timeout).
    Watch {
        /// Key prefix (empty: every key).
        #[arg(default_value = "", allow_hyphen_values = true)]
        prefix: String,
        /// Replay events from this revision (0: only new events).
        #[arg(long, value_name = "N", default_value_t = 0)]
        from_revision: u64,
    },
}

/// `caddyctl bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Closed-loop key-value load: puts and gets on a fixed key space.
    Kv(BenchKvArgs),
}

/// Options of `caddyctl bench kv`.
#[derive(Debug, Args)]
pub struct BenchKvArgs {
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub clients: u64,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per written value (at most 16 MiB).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(0..=16 * 1024 * 1024))]
    pub value_size: u64,
    /// Fraction of operations that are reads, 0..1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub read_ratio: f64,
    /// Size of the key space.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Reads are serializable (any node) instead of linearizable.
    #[arg(long)]
    pub serializable: bool,
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&ratio) { Ok(ratio) } else { Err(format!("{ratio} is not between 0 and 1")) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("caddyctl").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = parse(&["kv", "get", "a", "--json", "--config", "/x/c.toml", "--timeout", "2s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.config_path(), PathBuf::from("/x/c.toml"));
        assert_eq!(cli.timeout, Some(Duration::from_secs(2)));
        let cli = parse(&["--json", "cluster", "status"]).unwrap();
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Cluster(ClusterCommand::Status)));
        assert!(parse(&["--timeout", "soon", "cluster", "status"]).is_err());
        assert!(parse(&["--timeout", "0s", "cluster", "status"]).is_err());
    }

    #[test]
    fn endpoints_from_flags_or_the_environment() {
        let cli = parse(&["kv", "get", "k", "--endpoint", "127.0.0.1:7101", "--endpoint", "[::1]:7102"]).unwrap();
        assert_eq!(cli.endpoints, ["127.0.0.1:7101", "[::1]:7102"]);
        let cli = parse(&["--endpoint", "a:1,b:2", "cluster", "status"]).unwrap();
        assert_eq!(cli.endpoints, ["a:1", "b:2"]);
        for bad in ["nohost", ":7101", "h:0", "h:99999", "h:x"] {
            let err = parse(&["--endpoint", bad, "cluster", "status"]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
        }
        assert!(parse(&["cluster", "status"]).unwrap().endpoints.is_empty());
    }

    #[test]
    fn kv_commands() {
        match parse(&["kv", "put", "k", "-v-", "--if-revision", "7"]).unwrap().command {
            Command::Kv(KvCommand::Put { key, value, if_revision }) => {
                assert_eq!((key.as_str(), value.as_str(), if_revision), ("k", "-v-", Some(7)));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "get", "k", "--serializable"]).unwrap().command {
            Command::Kv(KvCommand::Get { key, serializable }) => {
                assert!(key == "k" && serializable)
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "del", "k"]).unwrap().command {
            Command::Kv(KvCommand::Del { key, if_revision }) => {
                assert!(key == "k" && if_revision.is_none())
            }
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "list", "p/"]).unwrap().command {
            Command::Kv(KvCommand::List { prefix, limit, all, .. }) => assert!(prefix == "p/" && limit == 100 && !all),
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "list", "--all", "--limit", "5"]).unwrap().command {
            Command::Kv(KvCommand::List { prefix, limit, all, .. }) => assert!(prefix.is_empty() && limit == 5 && all),
            other => panic!("{other:?}"),
        }
        match parse(&["kv", "watch", "p/", "--from-revision", "12"]).unwrap().command {
            Command::Kv(KvCommand::Watch { prefix, from_revision }) => assert!(prefix == "p/" && from_revision == 12),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["kv", "put", "k"]).is_err());
        assert!(parse(&["kv", "get"]).is_err());
        assert!(parse(&["kv", "put", "k", "v", "--if-revision", "x"]).is_err());
    }

    #[test]
    fn cluster_commands() {
        match parse(&["cluster", "add-node", "10.0.0.4:7000", "--learner"]).unwrap().command {
            Command::Cluster(ClusterCommand::AddNode { addr, learner }) => {
                assert!(addr == "10.0.0.4:7000" && learner)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["cluster", "remove-node", "3"]).unwrap().command,
            Command::Cluster(ClusterCommand::RemoveNode { id: 3 })
        ));
        assert!(matches!(
            parse(&["cluster", "transfer-leader", "2"]).unwrap().command,
            Command::Cluster(ClusterCommand::TransferLeader { id: 2 })
        ));
        assert!(matches!(parse(&["cluster", "snapshot"]).unwrap().command, Command::Cluster(ClusterCommand::Snapshot)));
        match parse(&["cluster", "join-token"]).unwrap().command {
            Command::Cluster(ClusterCommand::JoinToken { ttl, list: false, revoke: None }) => {
                assert_eq!(ttl, Duration::from_secs(900))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["cluster", "join-token", "--ttl", "10m"]).unwrap().command {
            Command::Cluster(ClusterCommand::JoinToken { ttl, .. }) => {
                assert_eq!(ttl, Duration::from_secs(600))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["cluster", "join-token", "--list"]).unwrap().command,
            Command::Cluster(ClusterCommand::JoinToken { list: true, revoke: None, .. })
        ));
        match parse(&["cluster", "join-token", "--revoke", "7"]).unwrap().command {
            Command::Cluster(ClusterCommand::JoinToken { revoke: Some(r), list: false, .. }) => assert_eq!(r, "7"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cluster", "join-token", "--list", "--revoke", "7"]).is_err());
        assert!(parse(&["cluster", "join-token", "--revoke", "7", "--ttl", "1m"]).is_err());
        assert!(matches!(
            parse(&["cluster", "rotate-certs"]).unwrap().command,
            Command::Cluster(ClusterCommand::RotateCerts)
        ));
        match parse(&["cluster", "backup", "-o", "b.bin"]).unwrap().command {
            Command::Cluster(ClusterCommand::Backup { output }) => {
                assert_eq!(output, PathBuf::from("b.bin"))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cluster", "backup"]).is_err());
        assert!(parse(&["cluster", "remove-node", "x"]).is_err());
    }

    #[test]
    fn bench_flags_and_defaults() {
        match parse(&["bench", "kv", "--clients", "8", "--duration", "3s"]).unwrap().command {
            Command::Bench(BenchCommand::Kv(a)) => {
                assert_eq!((a.clients, a.duration, a.value_size, a.keys), (8, Duration::from_secs(3), 256, 10_000));
                assert_eq!(a.read_ratio, 0.0);
                assert!(!a.serializable);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["bench", "kv", "--read-ratio", "0.9", "--keys", "10", "--value-size", "1", "--serializable"])
            .unwrap()
            .command
        {
            Command::Bench(BenchCommand::Kv(a)) => {
                assert_eq!((a.read_ratio, a.keys, a.value_size, a.serializable), (0.9, 10, 1, true));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["bench", "kv", "--read-ratio", "1.5"]).is_err());
        assert!(parse(&["bench", "kv", "--clients", "0"]).is_err());
        assert!(parse(&["bench", "kv", "--keys", "0"]).is_err());
        assert!(parse(&["bench", "kv", "--value-size", "1000000000000"]).is_err());
    }

    #[test]
    fn identity_globals_and_tenant_resolution() {
        let cli = parse(&["--config", "/etc/caddy/client.toml", "user", "list", "--tenant", "acme"]).unwrap();
        assert_eq!(cli.tenant.as_deref(), Some("acme"));
        assert_eq!(cli.credentials_path(), PathBuf::from("/etc/caddy/credentials"));
        assert_eq!(cli.tenant_override().as_deref(), Some("acme"));
        let cli = parse(&["--config", "client.toml", "--credentials", "/tmp/c", "tenant", "get"]).unwrap();
        assert_eq!(cli.credentials_path(), PathBuf::from("/tmp/c"));
        let mut cli = parse(&["--config", "client.toml", "tenant", "get"]).unwrap();
        cli.credentials = None;
        assert_eq!(cli.credentials_path(), PathBuf::from(CREDENTIALS_FILE));
        // The positional tenant of `tenant ...` wins over --tenant.
        let cli = parse(&["--tenant", "other", "tenant", "suspend", "acme"]).unwrap();
        assert_eq!(cli.tenant_override().as_deref(), Some("acme"));
        let cli = parse(&["tenant", "delete", "acme", "--confirm", "acme"]).unwrap();
        assert_eq!(cli.command.tenant_arg(), Some("acme"));
        assert_eq!(parse(&["--tenant", "", "tenant", "usage"]).unwrap().tenant_override(), None);
        assert!(parse(&["tenant", "delete", "acme"]).is_err());
    }

    #[test]
    fn login_and_tenant_commands() {
        match parse(&["login", "--email", "a@x.io", "--password-stdin", "--ttl", "8h"]).unwrap().command {
            Command::Login(LoginArgs { email, password_stdin, ttl }) => {
                assert_eq!(
                    (email.as_str(), password_stdin, ttl),
                    ("a@x.io", true, Some(Duration::from_secs(8 * 3600)))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["login"]).is_err());
        assert!(parse(&["login", "--email", "a@x.io"]).unwrap().command.anonymous());
        assert!(parse(&["invite", "accept", "ci_x", "--name", "A"]).unwrap().command.anonymous());
        assert!(!parse(&["logout"]).unwrap().command.anonymous());
        match parse(&["tenant", "create", "acme", "--name", "Acme Inc", "--max-users", "5", "--max-rps", "50"])
            .unwrap()
            .command
        {
            Command::Tenant(TenantCommand::Create { id, name, plan, quotas }) => {
                assert_eq!((id.as_str(), name.as_str(), plan), ("acme", "Acme Inc", None));
                assert_eq!((quotas.max_users, quotas.max_rps, quotas.max_documents), (Some(5), Some(50), None));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["tenant", "update", "--plan", "gold"]).unwrap().command {
            Command::Tenant(TenantCommand::Update { id, name, plan, .. }) => {
                assert_eq!((id, name, plan.as_deref()), (None, None, Some("gold")))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["tenant", "list", "--start-after", "b", "--limit", "5"]).unwrap().command {
            Command::Tenant(TenantCommand::List { start_after, limit }) => assert!(start_after == "b" && limit == 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_commands() {
        match parse(&["user", "create", "--email", "a@x.io", "--name", "Ann", "--role", "admin", "--role", "viewer"])
            .unwrap()
            .command
        {
            Command::User(UserCommand::Create { email, name, password_stdin, roles }) => {
                assert_eq!((email.as_str(), name.as_str(), password_stdin), ("a@x.io", "Ann", false));
                assert_eq!(roles, ["admin", "viewer"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["user", "list", "--all", "--format", "csv", "--search", "ann"]).unwrap().command {
            Command::User(UserCommand::List { search, start_after, limit, all, format }) => {
                assert_eq!((search.as_str(), start_after.as_str(), limit, all), ("ann", "", None, true));
                assert_eq!(format, ListFormat::Csv);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["user", "list"]).unwrap().command {
            Command::User(UserCommand::List { format, all, .. }) => assert!(format == ListFormat::Table && !all),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["user", "list", "--format", "xml"]).is_err());
        match parse(&["user", "export", "user-7", "-o", "out.json"]).unwrap().command {
            Command::User(UserCommand::Export { user, output }) => {
                assert_eq!((user.as_str(), output), ("user-7", Some(PathBuf::from("out.json"))))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["user", "erase", "a@x.io"]).unwrap().command {
            Command::User(UserCommand::Erase { user, yes }) => assert!(user == "a@x.io" && !yes),
            other => panic!("{other:?}"),
        }
        match parse(&["user", "import", "users.csv"]).unwrap().command {
            Command::User(UserCommand::Import { file }) => assert_eq!(file, PathBuf::from("users.csv")),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["user", "get"]).is_err());
    }

    #[test]
    fn access_commands() {
        match parse(&["role", "create", "auditor", "--permission", "audit:read", "kv:read", "--inherits", "viewer"])
            .unwrap()
            .command
        {
            Command::Role(RoleCommand::Create { name, permissions, inherits, description }) => {
                assert_eq!(name, "auditor");
                assert_eq!(permissions, ["audit:read", "kv:read"]);
                assert_eq!(inherits, ["viewer"]);
                assert!(description.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["role", "create", "x"]).is_err());
        match parse(&["role", "grant", "editor", "--team", "team-2"]).unwrap().command {
            Command::Role(RoleCommand::Grant { role, target }) => {
                assert_eq!((role.as_str(), target.user, target.team.as_deref()), ("editor", None, Some("team-2")))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["role", "grant", "editor"]).is_err());
        assert!(parse(&["role", "revoke", "editor", "--user", "u", "--team", "t"]).is_err());
        match parse(&["team", "add", "team-1", "--team", "team-2"]).unwrap().command {
            Command::Team(TeamCommand::Add { team, member }) => {
                assert_eq!((team.as_str(), member.user, member.subteam.as_deref()), ("team-1", None, Some("team-2")))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["team", "remove", "team-1"]).is_err());
        match parse(&["apikey", "create", "--name", "ci", "--scope", "kv:read", "--scope", "kv:write", "--ttl", "30d"])
            .unwrap()
            .command
        {
            Command::ApiKey(ApiKeyCommand::Create { name, scopes, ttl }) => {
                assert_eq!((name.as_str(), ttl), ("ci", Some(Duration::from_secs(30 * 86_400))));
                assert_eq!(scopes, ["kv:read", "kv:write"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["apikey", "rotate", "key-3", "--grace", "1h"]).unwrap().command {
            Command::ApiKey(ApiKeyCommand::Rotate { key, grace }) => {
                assert_eq!((key.as_str(), grace), ("key-3", Some(Duration::from_secs(3600))))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["invite", "create", "--email", "b@x.io", "--role", "viewer", "--ttl", "2d"]).unwrap().command {
            Command::Invite(InviteCommand::Create { email, roles, ttl }) => {
                assert_eq!((email.as_str(), ttl), ("b@x.io", Some(Duration::from_secs(2 * 86_400))));
                assert_eq!(roles, ["viewer"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["session", "terminate", "session-4"]).unwrap().command {
            Command::Session(SessionCommand::Terminate { session, user, all }) => {
                assert_eq!((session.as_deref(), user, all), (Some("session-4"), None, false))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["session", "terminate", "--user", "user-2", "--all"]).unwrap().command {
            Command::Session(SessionCommand::Terminate { session, user, all }) => {
                assert_eq!((session, user.as_deref(), all), (None, Some("user-2"), true))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["session", "terminate"]).is_err());
        assert!(parse(&["session", "terminate", "--user", "user-2"]).is_err());
        assert!(parse(&["session", "terminate", "session-4", "--user", "user-2", "--all"]).is_err());
    }

    #[test]
    fn audit_commands() {
        match parse(&[
            "audit",
            "list",
            "--actor",
            "user-1",
            "--since",
            "2023-11-14T22:13:20Z",
            "--until",
            "1700000001000",
        ])
        .unwrap()
        .command
        {
            Command::Audit(AuditCommand::List { actor, action, since, until, after_seq, limit }) => {
                assert_eq!((actor.as_deref(), action), (Some("user-1"), None));
                assert_eq!((since, until), (Some(1_700_000_000_000), Some(1_700_000_001_000)));
                assert_eq!((after_seq, limit), (0, 100));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["audit", "list", "--since", "last tuesday"]).is_err());
        assert!(parse(&["audit", "list", "--limit", "0"]).is_err());
        assert!(matches!(parse(&["audit", "verify"]).unwrap().command, Command::Audit(AuditCommand::Verify)));
        match parse(&["audit", "export", "-o", "trail.jsonl"]).unwrap().command {
            Command::Audit(AuditCommand::Export { output, after_seq: 0 }) => {
                assert_eq!(output, Some(PathBuf::from("trail.jsonl")))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["audit", "export", "--after-seq", "40"]).unwrap().command,
            Command::Audit(AuditCommand::Export { output: None, after_seq: 40 })
        ));
        assert!(matches!(
            parse(&["audit", "retention", "show"]).unwrap().command,
            Command::Audit(AuditCommand::Retention(AuditRetentionCommand::Show))
        ));
        match parse(&["audit", "retention", "set", "--days", "30"]).unwrap().command {
            Command::Audit(AuditCommand::Retention(AuditRetentionCommand::Set { days, max_entries })) => {
                assert_eq!((days, max_entries), (Some(30), None))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_commands() {
        match parse(&[
            "file", "upload", "plan.dxf", "--folder", "folder-2", "--tag", "a", "--tag", "b", "--type", "x/y",
        ])
        .unwrap()
        .command
        {
            Command::File(FileCommand::Upload { path, folder, name, as_version_of, media_type, tags }) => {
                assert_eq!((path, folder.as_deref(), name), (PathBuf::from("plan.dxf"), Some("folder-2"), None));
                assert_eq!((as_version_of, media_type.as_deref()), (None, Some("x/y")));
                assert_eq!(tags, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["file", "upload", "p", "--as-version-of", "file-1"]).is_ok());
        assert!(parse(&["file", "upload", "p", "--as-version-of", "file-1", "--name", "n"]).is_err());
        match parse(&["file", "download", "file-3", "-o", "-", "--version", "2", "--offset", "10", "--length", "5"])
            .unwrap()
            .command
        {
            Command::File(FileCommand::Download { id, output, version, offset, length, link }) => {
                assert_eq!((id.as_deref(), output, link), (Some("file-3"), Some(PathBuf::from("-")), None));
                assert_eq!((version, offset, length), (Some(2), 10, Some(5)));
            }
            other => panic!("{other:?}"),
        }
        let link = parse(&["file", "download", "--link", "cl_x"]).unwrap();
        assert!(link.command.anonymous());
        assert!(!parse(&["file", "download", "file-3"]).unwrap().command.anonymous());
        assert!(parse(&["file", "download"]).is_err());
        assert!(parse(&["file", "download", "file-3", "--link", "cl_x"]).is_err());
        assert!(parse(&["file", "--version"]).is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayVersion));
        match parse(&["file", "ls", "folder-2", "--tree"]).unwrap().command {
            Command::File(FileCommand::Ls { folder, tree }) => assert!(folder.as_deref() == Some("folder-2") && tree),
            other => panic!("{other:?}"),
        }
        match parse(&["file", "tag", "file-1"]).unwrap().command {
            Command::File(FileCommand::Tag { file, tags }) => assert!(file == "file-1" && tags.is_empty()),
            other => panic!("{other:?}"),
        }
        match parse(&["file", "restore-version", "file-1", "3"]).unwrap().command {
            Command::File(FileCommand::RestoreVersion { file, number }) => assert!(file == "file-1" && number == 3),
            other => panic!("{other:?}"),
        }
        match parse(&["file", "share", "file-1", "team-2", "--access", "write", "--expires", "7d"]).unwrap().command {
            Command::File(FileCommand::Share { file, with, access, expires }) => {
                assert_eq!((file.as_str(), with.as_str(), access), ("file-1", "team-2", ShareAccess::Write));
                assert_eq!(expires, Some(Duration::from_secs(7 * 86_400)));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["file", "share", "file-1", "user-2"]).is_err());
        assert!(parse(&["file", "share", "file-1", "user-2", "--access", "admin"]).is_err());
        match parse(&["file", "unlink", "file-1", "4"]).unwrap().command {
            Command::File(FileCommand::Unlink { file, link }) => assert!(file == "file-1" && link == 4),
            other => panic!("{other:?}"),
        }
        match parse(&["file", "search", "--name", "plan", "--modified-after", "7d", "--modified-before", "2024-05-01"])
            .unwrap()
            .command
        {
            Command::File(FileCommand::Search { name, modified_after, modified_before, limit, .. }) => {
                assert_eq!((name.as_deref(), limit), (Some("plan"), 100));
                assert_eq!(modified_after, Some(When::Ago(Duration::from_secs(7 * 86_400))));
                assert_eq!(modified_before, Some(When::At(1_714_521_600_000)));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["file", "search", "--limit", "0"]).is_err());
        assert!(parse(&["file", "search", "--modified-after", "last week"]).is_err());
        for cmd in [
            &["file", "rm", "doc-3"][..],
            &["file", "trash"],
            &["file", "restore", "folder-1"],
            &["file", "purge", "file-9"],
        ] {
            assert!(matches!(parse(cmd).unwrap().command, Command::File(_)), "{cmd:?}");
        }
        assert!(matches!(
            parse(&["storage", "usage", "--json"]).unwrap().command,
            Command::Storage(StorageCommand::Usage)
        ));
    }

    #[test]
    fn search_times() {
        assert_eq!(parse_when("1700000000000"), Ok(When::At(1_700_000_000_000)));
        assert_eq!(parse_when("2023-11-14T22:13:20Z"), Ok(When::At(1_700_000_000_000)));
        assert_eq!(parse_when("12h"), Ok(When::Ago(Duration::from_secs(12 * 3600))));
        assert!(parse_when("soon").is_err() && parse_when("").is_err());
        assert_eq!(When::Ago(Duration::from_secs(1)).resolve(5000), 4000);
        assert_eq!(When::Ago(Duration::from_secs(10)).resolve(5000), 0);
        assert_eq!(When::At(7).resolve(5000), 7);
    }

    #[test]
    fn default_config_path() {
        let mut cli = parse(&["cluster", "status"]).unwrap();
        cli.config = None;
        assert_eq!(cli.config_path(), PathBuf::from(DEFAULT_CONFIG));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
