//! Credentials as the options give them, validated but not yet used: a user name and
//! password, and a Google service-account key. Wiring (`app::connect`) turns them into
//! registry logins.

use std::fmt;

use gcp_auth::CustomServiceAccount;

/// A username and password (or token) for one registry. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (`oauth2accesstoken`, `_json_key`, a Docker Hub user, ...).
    pub username: String,
    /// The secret.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// A service-account key as given (path contents or JSON text). `Debug` shows no key.
#[derive(Clone)]
pub struct GcpKey {
    /// The key JSON (secret): read by `gcp` for the token exchange.
    pub(crate) json: String,
    /// The service account, for messages.
    pub client_email: String,
}

impl fmt::Debug for GcpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcpKey({})", self.client_email)
    }
}

impl GcpKey {
    /// Checks the fields a token exchange needs; the error names the field, never a value.
    pub fn parse(json: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            format!(
                "not a JSON service-account key (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        for field in ["type", "client_email", "private_key", "token_uri"] {
            if !value.get(field).is_some_and(serde_json::Value::is_string) {
                return Err(format!(
                    "the key has no `{field}` field; download a JSON key for a service account"
                ));
            }
        }
        if value["type"] != "service_account" {
            return Err("`type` is not \"service_account\"; give a service-account key".into());
        }
        CustomServiceAccount::from_json(json)
            .map_err(|_| "the `private_key` field is not a PEM RSA private key".to_string())?;
        Ok(GcpKey {
            json: json.to_string(),
            client_email: value["client_email"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// The key's secret parts: the raw JSON and the private key (for masking).
    pub fn secrets(&self) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(&self.json).unwrap_or_default();
        let private = value["private_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        vec![self.json.clone(), private]
    }
}
