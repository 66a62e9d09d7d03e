//! Google service-account keys: validated up front, exchanged by `gcp_auth` for access
//! tokens (honouring the key's `token_uri`), used as `oauth2accesstoken` logins.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use gcp_auth::{CustomServiceAccount, TokenProvider};

use crate::oci::auth::{CredentialSource, Credentials, Login};
use crate::reference::RegistryHost;
pub use crate::settings::GcpKey;

const SCOPES: &[&str] = &["https://www.googleapis.com/auth/cloud-platform"];

impl GcpKey {
    /// A login that fetches (and caches, and refreshes) access tokens for this key.
    pub fn login(&self) -> Result<Login, String> {
        let account = CustomServiceAccount::from_json(&self.json)
            .map_err(|e| format!("service account: {e}"))?;
        Ok(Login::Dynamic(Arc::new(GoogleTokens { account })))
    }
}

/// Whether a GCP key is sent to `host`: Google's registries always; another registry
/// only when it is the one registry the key can be meant for (`only_registry`: the run's
/// sole source registry, or serve's sole upstream). A Google token never reaches a
/// third-party registry that merely sits beside a Google source in a config file.
pub fn key_goes_to(host: &RegistryHost, only_registry: bool) -> bool {
    is_google_registry(host) || only_registry
}

/// Registries that take Google access tokens as a target login.
pub fn is_google_registry(host: &RegistryHost) -> bool {
    let host = host.as_str();
    host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with("-docker.pkg.dev")
}

struct GoogleTokens {
    account: CustomServiceAccount,
}

impl CredentialSource for GoogleTokens {
    fn credentials(&self) -> BoxFuture<'_, Result<Credentials, String>> {
        Box::pin(async move {
            // gcp_auth caches the token and fetches a new one 20 s before it expires.
            let token = self
                .account
                .token(SCOPES)
                .await
                .map_err(|e| format!("Google token exchange failed: {e}"))?;
            Ok(Credentials {
                username: "oauth2accesstoken".into(),
                password: token.as_str().to_string(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_goes_to_google_or_to_the_only_registry() {
        let host = |h: &str| h.parse::<RegistryHost>().unwrap();
        assert!(key_goes_to(&host("gcr.io"), false));
        assert!(key_goes_to(&host("us-docker.pkg.dev"), false));
        assert!(!key_goes_to(&host("quay.io"), false));
        assert!(key_goes_to(&host("127.0.0.1:5000"), true));
    }

    #[test]
    fn malformed_keys_name_the_field_and_never_the_value() {
        let secret = "-----BEGIN PRIVATE KEY-----\\nTOPSECRET\\n-----END PRIVATE KEY-----\\n";
        let no_uri = format!(
            r#"{{"type":"service_account","client_email":"a@b","private_key":"{secret}"}}"#
        );
        let err = GcpKey::parse(&no_uri).unwrap_err();
        assert!(
            err.contains("`token_uri`") && !err.contains("TOPSECRET"),
            "{err}"
        );
        let bad_key = format!(
            r#"{{"type":"service_account","client_email":"a@b","private_key":"{secret}","token_uri":"http://x"}}"#
        );
        let err = GcpKey::parse(&bad_key).unwrap_err();
        assert!(
            err.contains("private_key") && !err.contains("TOPSECRET"),
            "{err}"
        );
        assert!(GcpKey::parse("{ nope").unwrap_err().contains("not a JSON"));
        assert!(
            is_google_registry(&"europe-docker.pkg.dev".parse().unwrap())
                && !is_google_registry(&"docker.io".parse().unwrap())
        );
    }
}
