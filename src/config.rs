//! Settings, from flags or the environment (contract.md, "Configuration"). A bad value stops
//! start-up with a message naming the variable.

use std::net::SocketAddr;

use clap::Args;

/// Sandbox mini-program credentials: used when no real ones are configured.
pub const SANDBOX_APPID: &str = "wx5a4d3c2b1a0f9e8d";
pub const SANDBOX_SECRET: &str = "5a4d3c2b1a0f9e8d7c6b5a4d3c2b1a0f";

#[derive(Args, Clone, Debug)]
pub struct DbSettings {
    /// `sqlite://FILE` (embedded) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        default_value = "sqlite://paystream.db"
    )]
    pub database_url: String,
}

#[derive(Args, Clone, Debug)]
pub struct Settings {
    #[command(flatten)]
    pub db: DbSettings,

    /// HTTP listen address.
    #[arg(
        long,
        env = "LISTEN_ADDR",
        value_name = "LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_addr: SocketAddr,

    /// Base of the URLs WeChat calls back (default: http://LISTEN_ADDR).
    #[arg(long, env = "PUBLIC_BASE_URL", value_name = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<url::Url>,

    /// Bootstrap staff account (role admin), created at start-up when absent.
    #[arg(long, env = "ADMIN_USERNAME", value_name = "ADMIN_USERNAME")]
    pub admin_username: Option<String>,

    #[arg(
        long,
        env = "ADMIN_PASSWORD",
        value_name = "ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub admin_password: Option<String>,

    /// Mini-program appid; unset runs against the built-in sandbox.
    #[arg(long, env = "WECHAT_APPID", value_name = "WECHAT_APPID")]
    pub wechat_appid: Option<String>,

    #[arg(
        long,
        env = "WECHAT_SECRET",
        value_name = "WECHAT_SECRET",
        hide_env_values = true
    )]
    pub wechat_secret: Option<String>,

    /// Mini-program server API base (default https://api.weixin.qq.com, or the in-process
    /// sandbox when WECHAT_APPID is unset).
    #[arg(long, env = "WECHAT_API_BASE", value_name = "WECHAT_API_BASE")]
    pub wechat_api_base: Option<url::Url>,

    /// An unpaid order closes after this long.
    #[arg(long, env = "ORDER_TTL_SECONDS", value_name = "ORDER_TTL_SECONDS", default_value_t = 1800,
          value_parser = clap::value_parser!(u32).range(1..=7 * 24 * 3600))]
    pub order_ttl_seconds: u32,

    /// How often the expiry job looks for unpaid orders whose time is up.
    #[arg(long, env = "EXPIRY_INTERVAL_SECONDS", value_name = "EXPIRY_INTERVAL_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub expiry_interval_seconds: u32,

    /// Lifetime of a customer session token.
    #[arg(long, env = "SESSION_TTL_SECONDS", value_name = "SESSION_TTL_SECONDS", default_value_t = 86400,
          value_parser = clap::value_parser!(u32).range(60..))]
    pub session_ttl_seconds: u32,

    /// Lifetime of a staff session token.
    #[arg(long, env = "STAFF_SESSION_TTL_SECONDS", value_name = "STAFF_SESSION_TTL_SECONDS", default_value_t = 28800,
          value_parser = clap::value_parser!(u32).range(60..))]
    pub staff_session_ttl_seconds: u32,

    /// The first lockout after too many failed staff logins (5 for a username, 20 from an
    /// address); repeated lockouts double it, up to 16 times. Kept per engine process.
    #[arg(long, env = "ADMIN_LOGIN_LOCKOUT_SECONDS", value_name = "ADMIN_LOGIN_LOCKOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub admin_login_lockout_seconds: u32,

    /// WeChat Pay merchant id; unset runs the built-in WeChat Pay simulator.
    #[arg(long, env = "WECHATPAY_MCHID", value_name = "WECHATPAY_MCHID")]
    pub wechatpay_mchid: Option<String>,

    /// WeChat Pay API base (v2 and v3).
    #[arg(long, env = "WECHATPAY_API_BASE", value_name = "WECHATPAY_API_BASE")]
    pub wechatpay_api_base: Option<url::Url>,

    /// 32-byte APIv3 key.
    #[arg(
        long,
        env = "WECHATPAY_APIV3_KEY",
        value_name = "WECHATPAY_APIV3_KEY",
        hide_env_values = true
    )]
    pub wechatpay_apiv3_key: Option<String>,

    /// Path of the merchant API private key (PEM, PKCS#8 or PKCS#1).
    #[arg(
        long,
        env = "WECHATPAY_MCH_PRIVATE_KEY",
        value_name = "WECHATPAY_MCH_PRIVATE_KEY"
    )]
    pub wechatpay_mch_private_key: Option<std::path::PathBuf>,

    /// Serial number of the merchant API certificate.
    #[arg(
        long,
        env = "WECHATPAY_MCH_SERIAL",
        value_name = "WECHATPAY_MCH_SERIAL"
    )]
    pub wechatpay_mch_serial: Option<String>,

    /// WeChat Pay public key (path of the PEM file) for public-key mode.
    #[arg(
        long,
        env = "WECHATPAY_PUBLIC_KEY",
        value_name = "WECHATPAY_PUBLIC_KEY"
    )]
    pub wechatpay_public_key: Option<std::path::PathBuf>,

    /// `PUB_KEY_ID_…` of that public key.
    #[arg(
        long,
        env = "WECHATPAY_PUBLIC_KEY_ID",
        value_name = "WECHATPAY_PUBLIC_KEY_ID"
    )]
    pub wechatpay_public_key_id: Option<String>,

    /// APIv2 key (v2 signing, v2 refund-notify decryption); set, it enables `wechatpay_v2`.
    #[arg(
        long,
        env = "WECHATPAY_API_KEY",
        value_name = "WECHATPAY_API_KEY",
        hide_env_values = true
    )]
    pub wechatpay_api_key: Option<String>,

    /// APIv2 sign type: `MD5` or `HMAC-SHA256`.
    #[arg(
        long,
        env = "WECHATPAY_V2_SIGN_TYPE",
        value_name = "WECHATPAY_V2_SIGN_TYPE",
        default_value = "HMAC-SHA256",
        value_parser = ["MD5", "HMAC-SHA256"]
    )]
    pub wechatpay_v2_sign_type: String,

    /// The merchant API certificate (PEM) for APIv2's mutual-TLS `secapi` calls (refunds).
    #[arg(
        long,
        env = "WECHATPAY_V2_CLIENT_CERT",
        value_name = "WECHATPAY_V2_CLIENT_CERT"
    )]
    pub wechatpay_v2_client_cert: Option<std::path::PathBuf>,

    /// Its private key (PEM).
    #[arg(
        long,
        env = "WECHATPAY_V2_CLIENT_KEY",
        value_name = "WECHATPAY_V2_CLIENT_KEY"
    )]
    pub wechatpay_v2_client_key: Option<std::path::PathBuf>,

    /// Where APIv2's `/secapi/...` calls go; default: WECHATPAY_API_BASE (WeChat serves both on
    /// one host; `paystream sandbox` serves secapi on a TLS port of its own).
    #[arg(
        long,
        env = "WECHATPAY_V2_SECAPI_BASE",
        value_name = "WECHATPAY_V2_SECAPI_BASE"
    )]
    pub wechatpay_v2_secapi_base: Option<url::Url>,

    /// A CA certificate (PEM file) to trust for WeChat Pay's TLS besides the system's: only for
    /// a simulator (`paystream sandbox` prints its CA's path); WeChat needs none.
    #[arg(
        long,
        env = "WECHATPAY_V2_ROOT_CA",
        value_name = "WECHATPAY_V2_ROOT_CA"
    )]
    pub wechatpay_v2_root_ca: Option<std::path::PathBuf>,

    /// A payment with no notify by then is queried at WeChat Pay (then with back-off).
    #[arg(long, env = "PAYMENT_QUERY_AFTER_SECONDS", value_name = "PAYMENT_QUERY_AFTER_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub payment_query_after_seconds: u32,

    /// Beijing time of day (`HH:MM`) at which yesterday's WeChat Pay bills are reconciled
    /// (WeChat makes them after 10:00; a bill not ready yet is asked for again later).
    #[arg(long, env = "RECONCILE_AT", value_name = "RECONCILE_AT", default_value = "10:00",
          value_parser = parse_time_of_day)]
    pub reconcile_at: chrono::NaiveTime,

    /// A refund still processing after this long is queried (and re-sent if WeChat never got it).
    #[arg(long, env = "REFUND_QUERY_AFTER_SECONDS", value_name = "REFUND_QUERY_AFTER_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub refund_query_after_seconds: u32,

    /// Minimum seconds between platform-certificate downloads triggered by an unknown serial.
    #[arg(
        long,
        env = "WECHATPAY_CERT_REFETCH_SECONDS",
        value_name = "WECHATPAY_CERT_REFETCH_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub wechatpay_cert_refetch_seconds: u32,

    /// Hours between scheduled platform-certificate downloads, so a rotation is seen before the
    /// new certificate signs anything (the official SDKs do the same).
    #[arg(
        long,
        env = "WECHATPAY_CERT_REFRESH_HOURS",
        value_name = "WECHATPAY_CERT_REFRESH_HOURS",
        default_value_t = 12,
        value_parser = clap::value_parser!(u32).range(1..=720)
    )]
    pub wechatpay_cert_refresh_hours: u32,

    /// Seconds after a payment during which a refund answered "no such order" is retried:
    /// WeChat's refund system learns of a payment a little after the payment itself.
    #[arg(
        long,
        env = "WECHATPAY_REFUND_LAG_SECONDS",
        value_name = "WECHATPAY_REFUND_LAG_SECONDS",
        default_value_t = 600
    )]
    pub wechatpay_refund_lag_seconds: u32,

    /// Sandbox only: multiplies WeChat's notification retry schedule (1.0 = real time).
    #[arg(
        long,
        env = "SANDBOX_NOTIFY_TIME_SCALE",
        value_name = "SANDBOX_NOTIFY_TIME_SCALE",
        default_value_t = 1.0
    )]
    pub sandbox_notify_time_scale: f64,

    /// RabbitMQ (`amqp://…`) to fan the log out to; unset = workers run in this process.
    #[arg(
        long,
        env = "AMQP_URL",
        value_name = "AMQP_URL",
        hide_env_values = true
    )]
    pub amqp_url: Option<String>,

    /// TOML file mapping event types to subscribe-message templates; unset = no messages.
    #[arg(
        long,
        env = "SUBSCRIBE_MESSAGE_TEMPLATES",
        value_name = "SUBSCRIBE_MESSAGE_TEMPLATES"
    )]
    pub subscribe_message_templates: Option<std::path::PathBuf>,

    /// Do not run background jobs (expiry, …) in this process.
    #[arg(long, env = "NO_BACKGROUND_JOBS", value_name = "NO_BACKGROUND_JOBS")]
    pub no_background_jobs: bool,

    /// Open HTTP connections at most (never more than 3/4 of the process's file-descriptor
    /// limit); beyond it new connections wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", value_name = "MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub max_connections: u32,

    /// Seconds a request's headers may take to arrive (a trickling client is cut off).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECONDS", value_name = "HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_header_timeout_seconds: u32,

    /// Seconds a connection may stay silent before it is closed; keep it above the 30 s request
    /// deadline so that no request in progress is cut.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_SECONDS", value_name = "HTTP_IDLE_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http_idle_timeout_seconds: u32,
}

/// Where the mini-program API is and with which credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MiniProgramMode {
    /// The simulator is mounted in this process at `/sandbox`.
    InProcessSandbox,
    Remote {
        base: String,
        appid: String,
        secret: String,
    },
}

impl Settings {
    /// Every setting at its default, on this database, on an ephemeral loopback port, against
    /// the built-in WeChat simulator, no background jobs: what the demo, the benchmarks and the
    /// tests start from (and adjust).
    pub fn local(database_url: &str) -> Settings {
        Settings {
            db: DbSettings {
                database_url: database_url.to_string(),
            },
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_base_url: None,
            admin_username: None,
            admin_password: None,
            wechat_appid: None,
            wechat_secret: None,
            wechat_api_base: None,
            order_ttl_seconds: 1800,
            expiry_interval_seconds: 5,
            session_ttl_seconds: 86400,
            staff_session_ttl_seconds: 28800,
            admin_login_lockout_seconds: 60,
            no_background_jobs: true,
            max_connections: 1024,
            http_header_timeout_seconds: 10,
            http_idle_timeout_seconds: 60,
            wechatpay_mchid: None,
            wechatpay_api_base: None,
            wechatpay_apiv3_key: None,
            wechatpay_mch_private_key: None,
            wechatpay_mch_serial: None,
            wechatpay_public_key: None,
            wechatpay_public_key_id: None,
            wechatpay_api_key: None,
            wechatpay_v2_sign_type: "HMAC-SHA256".into(),
            wechatpay_v2_client_cert: None,
            wechatpay_v2_client_key: None,
            wechatpay_v2_secapi_base: None,
            wechatpay_v2_root_ca: None,
            payment_query_after_seconds: 60,
            refund_query_after_seconds: 60,
            reconcile_at: chrono::NaiveTime::from_hms_opt(10, 0, 0).expect("a valid time"),
            wechatpay_cert_refetch_seconds: 60,
            wechatpay_cert_refresh_hours: 12,
            wechatpay_refund_lag_seconds: 600,
            sandbox_notify_time_scale: 1.0,
            amqp_url: None,
            subscribe_message_templates: None,
        }
    }

    /// The subscribe-message templates (none when the setting is unset), checked in full.
    pub fn templates(&self) -> Result<paystream_workers::Templates, String> {
        match &self.subscribe_message_templates {
            Some(path) => paystream_workers::Templates::load(path).map_err(|e| e.to_string()),
            None => Ok(paystream_workers::Templates::default()),
        }
    }

    /// `AMQP_URL`, checked for its scheme (the rest is checked when connecting).
    pub fn amqp(&self) -> Result<Option<String>, String> {
        match &self.amqp_url {
            Some(url) if url.starts_with("amqp://") => Ok(Some(url.clone())),
            // lapin is built without TLS: say so instead of failing at the first connect.
            Some(url) if url.starts_with("amqps://") => Err(
                "AMQP_URL: amqps:// is not supported by this build; use amqp:// (on a private \
                 network, or behind a TLS-terminating proxy)"
                    .into(),
            ),
            Some(_) => Err("AMQP_URL must start with amqp://".into()),
            None => Ok(None),
        }
    }

    pub fn mini_program(&self) -> Result<MiniProgramMode, String> {
        match (
            &self.wechat_appid,
            &self.wechat_secret,
            &self.wechat_api_base,
        ) {
            (None, None, None) => Ok(MiniProgramMode::InProcessSandbox),
            // A stand-alone `paystream sandbox` somewhere: its default credentials apply.
            (None, None, Some(base)) => Ok(MiniProgramMode::Remote {
                base: base.to_string(),
                appid: SANDBOX_APPID.into(),
                secret: SANDBOX_SECRET.into(),
            }),
            (Some(appid), Some(secret), base) => Ok(MiniProgramMode::Remote {
                base: base
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "https://api.weixin.qq.com".into()),
                appid: appid.clone(),
                secret: secret.clone(),
            }),
            (Some(_), None, _) => Err("WECHAT_SECRET must be set when WECHAT_APPID is".into()),
            (None, Some(_), _) => Err("WECHAT_APPID must be set when WECHAT_SECRET is".into()),
        }
    }

    /// The mini-program and WeChat Pay settings together, refused when they mix the real WeChat
    /// with the built-in simulator: real payments beside simulated logins, or a real mini-program
    /// beside a simulator whose unauthenticated control API marks orders paid. A real merchant
    /// also needs an https `PUBLIC_BASE_URL` (WeChat Pay notifies only https URLs) unless its
    /// WeChat Pay is a simulator on this machine.
    pub fn wechat(&self) -> Result<(MiniProgramMode, Option<WechatPaySettings>), String> {
        let mode = self.mini_program()?;
        let pay = self.wechatpay()?;
        match (&mode, &pay) {
            (MiniProgramMode::InProcessSandbox, Some(_)) => {
                return Err(
                    "WECHATPAY_MCHID is set but WECHAT_APPID is not: real payments would \
                            meet the built-in simulator's logins; set WECHAT_APPID and \
                            WECHAT_SECRET (or WECHAT_API_BASE for a stand-alone simulator), or \
                            unset WECHATPAY_MCHID"
                        .into(),
                )
            }
            (MiniProgramMode::Remote { .. }, None) => {
                let which = if self.wechat_appid.is_some() {
                    "WECHAT_APPID"
                } else {
                    "WECHAT_API_BASE"
                };
                return Err(format!(
                    "{which} is set but WECHATPAY_MCHID is not: the built-in WeChat Pay \
                     simulator (whose control API marks orders paid) would run beside a \
                     mini-program it does not know; set WECHATPAY_MCHID and its keys, or unset \
                     {which}"
                ));
            }
            _ => {}
        }
        if let Some(merchant) = &pay {
            let local_wechat = url::Url::parse(&merchant.api_base)
                .ok()
                .is_some_and(|u| is_loopback(&u));
            let https = self
                .public_base_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https");
            if !https && !local_wechat {
                return Err(
                    "PUBLIC_BASE_URL must be the https:// address WeChat Pay can reach \
                            (it notifies https URLs only) when WECHATPAY_MCHID is set"
                        .into(),
                );
            }
        }
        Ok((mode, pay))
    }

    /// The WeChat Pay merchant, or `None` for the built-in simulator. A merchant speaks APIv3
    /// (its key, the merchant key and serial), APIv2 (its key), or both.
    pub fn wechatpay(&self) -> Result<Option<WechatPaySettings>, String> {
        let Some(mchid) = self.wechatpay_mchid.clone() else {
            return Ok(None);
        };
        let v3 = match &self.wechatpay_apiv3_key {
            Some(apiv3_key) => Some(self.wechatpay_v3(apiv3_key)?),
            None => None,
        };
        let v2 = match &self.wechatpay_api_key {
            Some(api_key) => Some(self.wechatpay_v2(api_key)?),
            None => None,
        };
        // A setting of one API without that API's key is a mistake (a typo in the key's name,
        // say) that would otherwise surface only as customers' `channel_unavailable`.
        if v3.is_none() {
            let v3_only = [
                (
                    "WECHATPAY_MCH_PRIVATE_KEY",
                    self.wechatpay_mch_private_key.is_some(),
                ),
                ("WECHATPAY_MCH_SERIAL", self.wechatpay_mch_serial.is_some()),
                ("WECHATPAY_PUBLIC_KEY", self.wechatpay_public_key.is_some()),
                (
                    "WECHATPAY_PUBLIC_KEY_ID",
                    self.wechatpay_public_key_id.is_some(),
                ),
            ];
            if let Some((name, _)) = v3_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} is set but WECHATPAY_APIV3_KEY is not: set it, or unset {name}"
                ));
            }
        }
        if v2.is_none() {
            let v2_only = [
                (
                    "WECHATPAY_V2_CLIENT_CERT",
                    self.wechatpay_v2_client_cert.is_some(),
                ),
                (
                    "WECHATPAY_V2_CLIENT_KEY",
                    self.wechatpay_v2_client_key.is_some(),
                ),
            ];
            if let Some((name, _)) = v2_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} is set but WECHATPAY_API_KEY is not: set it, or unset {name}"
                ));
            }
        }
        if v3.is_none() && v2.is_none() {
            return Err(
                "WECHATPAY_APIV3_KEY (APIv3) or WECHATPAY_API_KEY (APIv2) must be set \
                        when WECHATPAY_MCHID is"
                    .into(),
            );
        }
        Ok(Some(WechatPaySettings {
            mchid,
            api_base: self
                .wechatpay_api_base
                .as_ref()
                .map(|u| u.to_string())
                .unwrap_or_else(|| "https://api.mch.weixin.qq.com".into()),
            v3,
            v2,
        }))
    }

    fn wechatpay_v3(&self, apiv3_key: &str) -> Result<WechatPayV3Settings, String> {
        if apiv3_key.len() != 32 {
            return Err("WECHATPAY_APIV3_KEY must be exactly 32 characters".into());
        }
        let private_key = self
            .wechatpay_mch_private_key
            .clone()
            .ok_or("WECHATPAY_MCH_PRIVATE_KEY must be set when WECHATPAY_APIV3_KEY is")?;
        let serial = self
            .wechatpay_mch_serial
            .clone()
            .ok_or("WECHATPAY_MCH_SERIAL must be set when WECHATPAY_APIV3_KEY is")?;
        let public_key = match (&self.wechatpay_public_key, &self.wechatpay_public_key_id) {
            (Some(path), Some(id)) => Some((id.clone(), path.clone())),
            (None, None) => None,
            _ => return Err("WECHATPAY_PUBLIC_KEY and WECHATPAY_PUBLIC_KEY_ID go together".into()),
        };
        Ok(WechatPayV3Settings {
            apiv3_key: apiv3_key.to_string(),
            private_key,
            serial,
            public_key,
        })
    }

    fn wechatpay_v2(&self, api_key: &str) -> Result<WechatPayV2Settings, String> {
        if api_key.len() != 32 {
            return Err("WECHATPAY_API_KEY must be exactly 32 characters".into());
        }
        let client_certificate = match (
            &self.wechatpay_v2_client_cert,
            &self.wechatpay_v2_client_key,
        ) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(
                    "WECHATPAY_V2_CLIENT_CERT and WECHATPAY_V2_CLIENT_KEY go together".into(),
                )
            }
        };
        Ok(WechatPayV2Settings {
            api_key: api_key.to_string(),
            sign_type: self.wechatpay_v2_sign_type.clone(),
            client_certificate,
            secapi_base: self
                .wechatpay_v2_secapi_base
                .as_ref()
                .map(|u| u.to_string()),
            root_ca: self.wechatpay_v2_root_ca.clone(),
        })
    }

    pub fn admin_account(&self) -> Result<Option<(String, String)>, String> {
        match (&self.admin_username, &self.admin_password) {
            (Some(u), Some(p)) => Ok(Some((u.clone(), p.clone()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("ADMIN_PASSWORD must be set when ADMIN_USERNAME is".into()),
            (None, Some(_)) => Err("ADMIN_USERNAME must be set when ADMIN_PASSWORD is".into()),
        }
    }
}

/// Whether a URL's host is this machine (a simulator, not WeChat).
/// `HH:MM` (24-hour).
fn parse_time_of_day(text: &str) -> Result<chrono::NaiveTime, String> {
    chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("{text:?} is not a time of day as HH:MM (e.g. 10:00)"))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A real WeChat Pay merchant. No `Debug`: it holds keys.
#[derive(Clone)]
pub struct WechatPaySettings {
    pub mchid: String,
    pub api_base: String,
    pub v3: Option<WechatPayV3Settings>,
    pub v2: Option<WechatPayV2Settings>,
}

/// APIv3: its key, the merchant API key and serial, and maybe WeChat Pay's public key.
#[derive(Clone)]
pub struct WechatPayV3Settings {
    pub apiv3_key: String,
    pub private_key: std::path::PathBuf,
    pub serial: String,
    pub public_key: Option<(String, std::path::PathBuf)>,
}

/// APIv2: its key, the sign type, and the merchant certificate for refunds.
#[derive(Clone)]
pub struct WechatPayV2Settings {
    pub api_key: String,
    /// `MD5` or `HMAC-SHA256` (checked by the argument parser).
    pub sign_type: String,
    pub client_certificate: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub secapi_base: Option<String>,
    pub root_ca: Option<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        settings: Settings,
    }

    /// `Settings::local` must mean "the defaults", not a second set of numbers that drifts.
    #[test]
    fn local_settings_use_the_documented_defaults() {
        let parsed = Only::try_parse_from(["paystream"]).unwrap().settings;
        let local = Settings::local(&parsed.db.database_url);
        assert_eq!(local.order_ttl_seconds, parsed.order_ttl_seconds);
        assert_eq!(
            local.expiry_interval_seconds,
            parsed.expiry_interval_seconds
        );
        assert_eq!(local.session_ttl_seconds, parsed.session_ttl_seconds);
        assert_eq!(
            local.staff_session_ttl_seconds,
            parsed.staff_session_ttl_seconds
        );
        assert_eq!(
            local.admin_login_lockout_seconds,
            parsed.admin_login_lockout_seconds
        );
        assert_eq!(
            local.payment_query_after_seconds,
            parsed.payment_query_after_seconds
        );
        assert_eq!(
            local.refund_query_after_seconds,
            parsed.refund_query_after_seconds
        );
        assert_eq!(
            local.wechatpay_cert_refetch_seconds,
            parsed.wechatpay_cert_refetch_seconds
        );
        assert_eq!(
            local.sandbox_notify_time_scale,
            parsed.sandbox_notify_time_scale
        );
        assert_eq!(local.reconcile_at, parsed.reconcile_at);
        assert_eq!(parsed.reconcile_at.to_string(), "10:00:00");
        assert_eq!(parsed.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(parsed.db.database_url, "sqlite://paystream.db");
    }

    #[test]
    fn reconcile_at_is_a_time_of_day() {
        let parsed = Only::try_parse_from(["paystream", "--reconcile-at", "09:30"])
            .unwrap()
            .settings;
        assert_eq!(parsed.reconcile_at.to_string(), "09:30:00");
        for bad in ["25:00", "10", "ten"] {
            let err = Only::try_parse_from(["paystream", "--reconcile-at", bad])
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("RECONCILE_AT"), "{err}");
        }
    }

    #[test]
    fn amqp_and_templates_settings_are_checked_naming_the_variable() {
        let mut settings = Settings::local("sqlite://x.db");
        assert_eq!(settings.amqp(), Ok(None));
        settings.amqp_url = Some("amqp://guest:guest@127.0.0.1:5672/%2f".into());
        assert!(settings.amqp().unwrap().is_some());
        settings.amqp_url = Some("amqps://host/".into());
        assert!(settings.amqp().unwrap_err().contains("AMQP_URL"));
        settings.amqp_url = Some("http://host/".into());
        assert!(settings.amqp().unwrap_err().contains("AMQP_URL"));
        settings.subscribe_message_templates = Some("/no/such/file.toml".into());
        assert!(settings
            .templates()
            .unwrap_err()
            .contains("SUBSCRIBE_MESSAGE_TEMPLATES"));
    }

    #[test]
    fn real_and_simulated_wechat_do_not_mix() {
        let mut settings = Settings::local("sqlite://x.db");
        assert!(settings.wechat().is_ok(), "all sandbox is fine");
        settings.wechatpay_mchid = Some("1900000001".into());
        settings.wechatpay_api_key = Some("k".repeat(32));
        settings.wechatpay_api_base = Some("https://api.mch.weixin.qq.com".parse().unwrap());
        let refused = settings.wechat().err().unwrap();
        assert!(refused.contains("WECHAT_APPID"), "{refused}");
        settings.wechat_appid = Some("wx1".into());
        settings.wechat_secret = Some("s".into());
        let refused = settings.wechat().err().unwrap();
        assert!(refused.contains("PUBLIC_BASE_URL"), "{refused}");
        settings.public_base_url = Some("http://shop.example.com".parse().unwrap());
        assert!(settings.wechat().err().unwrap().contains("PUBLIC_BASE_URL"));
        settings.public_base_url = Some("https://shop.example.com".parse().unwrap());
        assert!(settings.wechat().is_ok());
        // A WeChat Pay simulator on this machine reaches http notify URLs.
        settings.public_base_url = None;
        settings.wechatpay_api_base = Some("http://127.0.0.1:8081".parse().unwrap());
        assert!(settings.wechat().is_ok());
        settings.wechatpay_mchid = None;
        settings.wechatpay_api_key = None;
        let refused = settings.wechat().err().unwrap();
        assert!(refused.contains("WECHATPAY_MCHID"), "{refused}");
    }

    #[test]
    fn half_configured_wechat_is_refused_naming_the_variable() {
        let mut settings = Settings::local("sqlite://x.db");
        settings.wechat_appid = Some("wx1".into());
        assert!(settings
            .mini_program()
            .unwrap_err()
            .contains("WECHAT_SECRET"));
        let mut settings = Settings::local("sqlite://x.db");
        settings.wechatpay_mchid = Some("1900000001".into());
        assert!(settings
            .wechatpay()
            .err()
            .unwrap()
            .contains("WECHATPAY_APIV3_KEY"));
        settings.wechatpay_apiv3_key = Some("short".into());
        assert!(settings.wechatpay().err().unwrap().contains("32"));
        settings.wechatpay_apiv3_key = None;
        settings.wechatpay_api_key = Some("k".repeat(32));
        assert!(settings.wechatpay().unwrap().unwrap().v3.is_none());
        settings.wechatpay_v2_client_cert = Some("/cert.pem".into());
        assert!(settings
            .wechatpay()
            .err()
            .unwrap()
            .contains("WECHATPAY_V2_CLIENT_KEY"));
        // One API's settings without its key: refused, naming both.
        settings.wechatpay_v2_client_cert = None;
        settings.wechatpay_mch_serial = Some("ABC".into());
        let refused = settings.wechatpay().err().unwrap();
        assert!(
            refused.contains("WECHATPAY_MCH_SERIAL") && refused.contains("WECHATPAY_APIV3_KEY"),
            "{refused}"
        );
        settings.wechatpay_mch_serial = None;
        settings.wechatpay_api_key = None;
        settings.wechatpay_apiv3_key = Some("k".repeat(32));
        settings.wechatpay_mch_private_key = Some("/key.pem".into());
        settings.wechatpay_mch_serial = Some("ABC".into());
        settings.wechatpay_v2_client_key = Some("/key.pem".into());
        let refused = settings.wechatpay().err().unwrap();
        assert!(refused.contains("WECHATPAY_API_KEY"), "{refused}");
        let mut settings = Settings::local("sqlite://x.db");
        settings.admin_username = Some("admin".into());
        assert!(settings
            .admin_account()
            .unwrap_err()
            .contains("ADMIN_PASSWORD"));
    }
}
