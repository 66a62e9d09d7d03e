//! Command-line and environment options, as typed by the user (validated in `settings`).
//! Every option is a flag and a `GCRSYNC_*` variable; seed flag names stay as aliases.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Mirror container images between registries, verbatim, and record what was mirrored.
#[derive(Debug, Parser)]
#[command(name = "gcrsync", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: sync).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options shared by every command.
    #[command(flatten)]
    pub options: Options,
}

/// The commands (SPEC §2).
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// List, plan, copy within the budget, record and commit (the default).
    Sync,
    /// Dry run: list and plan, print what would be copied and why; copy and commit nothing.
    Test,
    /// Rebuild the records from what the target holds (HEAD each mapped tag).
    Compare,
    /// Report pending counts per namespace; never copies.
    Monitor {
        /// Time between reports.
        #[arg(long, env = "GCRSYNC_INTERVAL", default_value = "5m")]
        interval: String,
        /// Reports to make (0 = forever).
        #[arg(long, env = "GCRSYNC_COUNT", default_value_t = 1)]
        count: u64,
    },
    /// Serve a pull-through registry in front of one or more upstreams (seed 004): the
    /// upstreams are reached with the source-side credentials and network options.
    Serve(ServeArgs),
    /// Work with a configuration file.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Regenerate the README options table, .env.example and action.yml's inputs and env
    /// map from these option definitions (for maintainers).
    #[command(hide = true)]
    GenerateDocs {
        /// Write nothing; fail when a file is out of date.
        #[arg(long)]
        check: bool,
        /// The repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

/// `gcrsync serve` (validated in `settings::serve`).
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct ServeArgs {
    /// Address to serve on, ADDR:PORT (`:PORT` = every interface).
    #[arg(long, env = "GCRSYNC_LISTEN", default_value = "0.0.0.0:5000")]
    pub listen: String,
    /// An upstream, [PREFIX=]REGISTRY[/NAMESPACE] (repeatable, or a comma list): without
    /// PREFIX it is the default route (client path appended unchanged).
    #[arg(long, env = "GCRSYNC_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// Directory of the content-addressed cache.
    #[arg(long, env = "GCRSYNC_CACHE_DIR", default_value = "./gcrsync-cache")]
    pub cache_dir: PathBuf,
    /// Evict least-recently-used content above this size (e.g. 20GiB, 500MB).
    #[arg(long, env = "GCRSYNC_CACHE_MAX")]
    pub cache_max: Option<String>,
    /// How long a cached tag is answered without asking the upstream (then a HEAD).
    #[arg(long, env = "GCRSYNC_TAG_TTL", default_value = "5m")]
    pub tag_ttl: String,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "GCRSYNC_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "GCRSYNC_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client logins from this htpasswd file (bcrypt entries, `htpasswd -B`).
    #[arg(long, env = "GCRSYNC_HTPASSWD")]
    pub htpasswd: Option<PathBuf>,
    /// Requests in flight per client address; more are answered 429.
    #[arg(
        long,
        env = "GCRSYNC_CLIENT_LIMIT",
        default_value_t = 64,
        allow_negative_numbers = true
    )]
    pub client_limit: i64,
    /// Append each tag fetched from an upstream to this file (JSON lines, for
    /// `sync --images-from`).
    #[arg(long, env = "GCRSYNC_RECORD_MISSES")]
    pub record_misses: Option<PathBuf>,
}

/// `gcrsync config ...`.
#[derive(Debug, Clone, Subcommand, PartialEq, Eq)]
pub enum ConfigAction {
    /// Check a configuration file: every key, value and source, with its line (exit 2 on
    /// any error).
    Check {
        /// The YAML file.
        file: PathBuf,
    },
    /// Print the resolved configuration (of --config, flags, variables and `.env`), each
    /// value with where it came from; secrets are never printed.
    Show,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct Options {
    /// YAML file of global defaults and a list of `sources:`, each with its own target,
    /// filters, mapping, budget share and credentials by reference; flags and variables
    /// override its globals.
    #[arg(long, env = "GCRSYNC_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Source namespace(s), e.g. gcr.io/google-containers (repeatable, or a comma/newline list).
    #[arg(long, env = "GCRSYNC_SOURCE", global = true, value_delimiter = ',')]
    pub source: Vec<String>,
    /// Seed alias: gcr.io namespace NS, same as --source gcr.io/NS.
    #[arg(long, env = "GCRSYNC_NAMESPACE", global = true, value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Explicit image names under the source (for registries that cannot list).
    #[arg(long, env = "GCRSYNC_IMAGES", global = true, value_delimiter = ',')]
    pub images: Vec<String>,
    /// Mirror exactly the images listed in this file: JSON lines from `serve
    /// --record-misses`, or REGISTRY/REPO:TAG lines.
    #[arg(long, env = "GCRSYNC_IMAGES_FROM", global = true)]
    pub images_from: Option<PathBuf>,
    /// Target namespace, e.g. docker.io/myuser or localhost:5002/mirror.
    #[arg(long, env = "GCRSYNC_TARGET", global = true)]
    pub target: Option<String>,
    /// minijinja template of the target repository path, over registry, namespace, image.
    #[arg(
        long,
        env = "GCRSYNC_NAME_TEMPLATE",
        global = true,
        default_value = "{{ image }}"
    )]
    pub name_template: String,
    /// Replaces '/' in nested names for targets with one path level (Docker Hub).
    #[arg(
        long,
        env = "GCRSYNC_FLATTEN_SEPARATOR",
        global = true,
        default_value = "_"
    )]
    pub flatten_separator: String,
    /// Source registry user name.
    #[arg(long, env = "GCRSYNC_SOURCE_USERNAME", global = true)]
    pub source_username: Option<String>,
    /// Source registry password or token.
    #[arg(
        long,
        env = "GCRSYNC_SOURCE_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub source_password: Option<String>,
    /// Target registry user name (also DOCKER_USERNAME).
    #[arg(
        long,
        env = "GCRSYNC_TARGET_USERNAME",
        global = true,
        alias = "dockeruser"
    )]
    pub target_username: Option<String>,
    /// Target registry password or token (also DOCKER_PASSWORD).
    #[arg(
        long,
        env = "GCRSYNC_TARGET_PASSWORD",
        global = true,
        alias = "dockerpassword",
        hide_env_values = true
    )]
    pub target_password: Option<String>,
    /// GCP service-account key, as a file path or as the JSON text itself (an Actions
    /// secret); also GOOGLE_APPLICATION_CREDENTIALS (a path).
    #[arg(
        long,
        env = "GCRSYNC_GCP_CREDENTIALS",
        global = true,
        hide_env_values = true
    )]
    pub gcp_credentials: Option<String>,
    /// Directory of a docker config.json whose `auths` are used for registries without
    /// explicit credentials (also DOCKER_CONFIG; default ~/.docker).
    #[arg(long, env = "GCRSYNC_DOCKER_CONFIG", global = true)]
    pub docker_config: Option<PathBuf>,
    /// GitHub repository (OWNER/NAME) the metadata is committed to (default: GITHUB_REPOSITORY when a token is set).
    #[arg(long, env = "GCRSYNC_GITHUB_REPO", global = true, alias = "githubrepo")]
    pub github_repo: Option<String>,
    /// GitHub token with contents: write (also GITHUB_TOKEN); the action defaults to the
    /// workflow's token (give the job `permissions: contents: write`).
    #[arg(
        long,
        env = "GCRSYNC_GITHUB_TOKEN",
        global = true,
        alias = "githubtoken",
        hide_env_values = true
    )]
    pub github_token: Option<String>,
    /// Branch to commit to (default: the repository's default branch).
    #[arg(long, env = "GCRSYNC_GITHUB_BRANCH", global = true)]
    pub github_branch: Option<String>,
    /// Create --github-branch from the default branch when it does not exist.
    #[arg(long, env = "GCRSYNC_GITHUB_CREATE_BRANCH", global = true)]
    pub github_create_branch: bool,
    /// GitHub API root (also GITHUB_API_URL), e.g. https://ghe.example.com/api/v3.
    #[arg(long, env = "GCRSYNC_GITHUB_API_URL", global = true)]
    pub github_api_url: Option<String>,
    /// Commit author, "NAME <EMAIL>" (the seed's --githubuser/--githubemail set its parts).
    #[arg(
        long,
        env = "GCRSYNC_COMMIT_AUTHOR",
        global = true,
        default_value = "gcrsync <gcrsync@users.noreply.github.com>"
    )]
    pub commit_author: String,
    /// Seed alias: commit author name.
    #[arg(long, env = "GCRSYNC_GITHUBUSER", global = true, hide = true)]
    pub githubuser: Option<String>,
    /// Seed alias: commit author e-mail.
    #[arg(long, env = "GCRSYNC_GITHUBEMAIL", global = true, hide = true)]
    pub githubemail: Option<String>,
    /// Local metadata directory (used when no GitHub repository is configured).
    #[arg(
        long,
        env = "GCRSYNC_METADATA_DIR",
        global = true,
        default_value = "./gcrsync-metadata"
    )]
    pub metadata_dir: PathBuf,
    /// Where in the metadata directory the layout starts.
    #[arg(long, env = "GCRSYNC_METADATA_PATH", global = true, default_value = "")]
    pub metadata_path: String,
    /// Max tags copied per run (-1 = no limit).
    #[arg(
        long,
        env = "GCRSYNC_PROCESS_COUNT",
        global = true,
        alias = "processcount",
        default_value_t = 100,
        allow_negative_numbers = true
    )]
    pub process_count: i64,
    /// Tags copied concurrently.
    #[arg(
        long,
        env = "GCRSYNC_PROCESS_LIMIT",
        global = true,
        alias = "processlimit",
        default_value_t = 8,
        allow_negative_numbers = true
    )]
    pub process_limit: i64,
    /// Concurrent listing and HEAD requests.
    #[arg(
        long,
        env = "GCRSYNC_QUERY_LIMIT",
        global = true,
        alias = "querylimit",
        default_value_t = 32,
        allow_negative_numbers = true
    )]
    pub query_limit: i64,
    /// Stop starting copies after this long (e.g. 45m), commit, and exit as usual.
    #[arg(long, env = "GCRSYNC_DEADLINE", global = true)]
    pub deadline: Option<String>,
    /// Commit a batch after every N recorded tags (and at the end, on deadline and on signals).
    #[arg(
        long,
        env = "GCRSYNC_COMMIT_EVERY",
        global = true,
        default_value_t = 50,
        allow_negative_numbers = true
    )]
    pub commit_every: i64,
    /// Mirror only tags matching this regex.
    #[arg(long, env = "GCRSYNC_INCLUDE_TAGS", global = true)]
    pub include_tags: Option<String>,
    /// Skip tags matching this regex.
    #[arg(long, env = "GCRSYNC_EXCLUDE_TAGS", global = true)]
    pub exclude_tags: Option<String>,
    /// Mirror only images matching this regex.
    #[arg(long, env = "GCRSYNC_INCLUDE_IMAGES", global = true)]
    pub include_images: Option<String>,
    /// Skip images matching this regex.
    #[arg(long, env = "GCRSYNC_EXCLUDE_IMAGES", global = true)]
    pub exclude_images: Option<String>,
    /// Keep only the newest N tags per image (semantic-version order; upload time where a
    /// tag is not a version).
    #[arg(
        long,
        env = "GCRSYNC_LATEST",
        global = true,
        allow_negative_numbers = true
    )]
    pub latest: Option<i64>,
    /// A named filter set: `legacy` reproduces latelee/gcrsync's rules.
    #[arg(long, env = "GCRSYNC_FILTER_PRESET", global = true)]
    pub filter_preset: Option<String>,
    /// Copy only these platforms of multi-arch images (OS/ARCH[/VARIANT], comma list), as
    /// a rebuilt index with a new digest; single-platform images of other platforms are
    /// skipped (default: every platform, verbatim).
    #[arg(long, env = "GCRSYNC_PLATFORMS", global = true)]
    pub platforms: Option<String>,
    /// Delete from the target the tags a complete source listing shows deleted upstream
    /// (never a digest another recorded tag uses, never `sha256-*` referrer tags).
    #[arg(long, env = "GCRSYNC_PRUNE", global = true)]
    pub prune: bool,
    /// Refuse to prune more than N tags in one run (nothing is deleted then); raise it to
    /// let a larger deletion through.
    #[arg(
        long,
        env = "GCRSYNC_PRUNE_MAX",
        global = true,
        default_value_t = 50,
        allow_negative_numbers = true
    )]
    pub prune_max: i64,
    /// Referrers (signatures, attestations, SBOMs) copied with each image: none, all, or a comma list of artifact types.
    #[arg(long, env = "GCRSYNC_REFERRERS", global = true, default_value = "all")]
    pub referrers: String,
    /// Read an unchanged tag's referrers again once per this period, each tag at its own
    /// time of it, so the reads spread over the runs (a listing that shows its referrer
    /// tags changed has them read at once); 0 or off: only then.
    #[arg(
        long,
        env = "GCRSYNC_REFERRERS_RECHECK",
        global = true,
        default_value = "24h"
    )]
    pub referrers_recheck: String,
    /// Connect and idle-read timeout (never a cap on a whole transfer).
    #[arg(
        long,
        env = "GCRSYNC_HTTP_TIMEOUT",
        global = true,
        alias = "httptimeout",
        default_value = "30s"
    )]
    pub http_timeout: String,
    /// Retries per request (exponential backoff with jitter; honours Retry-After).
    #[arg(
        long,
        env = "GCRSYNC_RETRIES",
        global = true,
        default_value_t = 4,
        allow_negative_numbers = true
    )]
    pub retries: i64,
    /// http, https or socks5 proxy for every request (default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY).
    #[arg(long, env = "GCRSYNC_PROXY", global = true)]
    pub proxy: Option<String>,
    /// Registry reached without TLS verification: HOST speaks plain HTTP, https://HOST skips
    /// certificate checks (repeatable, or a comma list).
    #[arg(
        long,
        env = "GCRSYNC_INSECURE_REGISTRY",
        global = true,
        value_delimiter = ','
    )]
    pub insecure_registry: Vec<String>,
    /// Extra CA certificate (PEM) trusted for every registry.
    #[arg(long, env = "GCRSYNC_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Take only the images whose stable hash falls in shard K of N.
    #[arg(long, env = "GCRSYNC_SHARD", global = true, default_value = "1/1")]
    pub shard: String,
    /// IANA time zone of CHANGELOG timestamps.
    #[arg(long, env = "GCRSYNC_TIMEZONE", global = true, default_value = "UTC")]
    pub timezone: String,
    /// Template file replacing the built-in namespace README.
    #[arg(long, env = "GCRSYNC_README_TEMPLATE", global = true)]
    pub readme_template: Option<PathBuf>,
    /// Template file replacing the built-in page of each image (`<namespace>/<image>.md`).
    #[arg(long, env = "GCRSYNC_IMAGE_TEMPLATE", global = true)]
    pub image_template: Option<PathBuf>,
    /// Template file replacing the built-in CHANGELOG block.
    #[arg(long, env = "GCRSYNC_CHANGELOG_TEMPLATE", global = true)]
    pub changelog_template: Option<PathBuf>,
    /// Plan only (as `test`); for `compare`, print instead of writing.
    #[arg(long, env = "GCRSYNC_DRY_RUN", global = true)]
    pub dry_run: bool,
    /// Write a machine-readable JSON report of the run here.
    #[arg(long, env = "GCRSYNC_REPORT", global = true)]
    pub report: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(
        long,
        env = "GCRSYNC_LOG_FORMAT",
        global = true,
        default_value = "text"
    )]
    pub log_format: String,
    /// More logging (-v debug, -vv trace; as a variable or action input, the count: 1 or 2);
    /// RUNNER_DEBUG=1 (a job re-run with debug logging) means -v.
    #[arg(short, long, env = "GCRSYNC_VERBOSE", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less logging (warnings and errors only; true or false as a variable or action input).
    #[arg(short, long, env = "GCRSYNC_QUIET", global = true)]
    pub quiet: bool,
}
