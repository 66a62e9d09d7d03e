//! The referrers API over HTTP: one page as the registry sent it, and what the registry
//! showed of the API. A registry without it is asked once per client (once per run), not
//! once per image: 0 not asked, 1 has it, 2 has not.

use std::sync::atomic::Ordering::Relaxed;

use reqwest::{Method, header};

use super::HttpRegistry;
use crate::oci::error::{Error, Result};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::referrers::{ReferrersPage, parse_index};
use crate::oci::send::{expect, header_str, loggable, next_link};
use crate::reference::{Digest, RepoPath};

impl HttpRegistry {
    /// [`Registry::referrers_page`] over HTTP; a registry that showed it has no API is
    /// not asked again.
    pub(super) async fn get_referrers_page(
        &self,
        repo: &RepoPath,
        digest: &Digest,
        artifact_type: Option<&str>,
        page: Option<&str>,
    ) -> Result<Option<ReferrersPage>> {
        if self.referrers_api.load(Relaxed) == 2 {
            return Ok(None);
        }
        let url = match page {
            Some(next) => self.url(next),
            None => {
                let mut url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
                if let Some(kind) = artifact_type {
                    let query: String = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("artifactType", kind)
                        .finish();
                    url = format!("{url}?{query}");
                }
                url
            }
        };
        // The registry's credentials go with every page: never to another host.
        if !url.starts_with(&format!("{}/", self.base)) {
            return Err(Error::InvalidResponse {
                url: loggable(&url),
                detail: format!("a next-page link leaves the registry {}", self.base),
            });
        }
        let _turn = self.query_turn().await;
        let scopes = [self.scope(repo)];
        self.retry
            .run("", || async {
                let response = self
                    .send(Method::GET, &url, &scopes, |b| {
                        b.header(header::ACCEPT, OCI_INDEX)
                    })
                    .await?;
                // A registry without the API answers 404 (distribution spec), some with a
                // plain-text page; others answer an unknown route with 400, 405 or 501.
                // None is an error: the tag fallback is read instead.
                let response =
                    expect(&Method::GET, &url, response, &[200, 400, 404, 405, 501]).await?;
                if response.status() != 200 {
                    // A registry with the API may answer 404 for a repository or subject
                    // it does not know (with the registry's error JSON); anything else
                    // (a plain "404 page not found", 400, 405, 501) is a missing route.
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let unknown =
                        body.contains("NAME_UNKNOWN") || body.contains("MANIFEST_UNKNOWN");
                    if status != 404 || !unknown {
                        self.referrers_api.store(2, Relaxed);
                    }
                    return Ok(None);
                }
                let content_type = header_str(&response, "content-type")
                    .unwrap_or(OCI_INDEX)
                    .to_string();
                let filters_applied =
                    header_str(&response, "oci-filters-applied").map(str::to_string);
                let next = next_link(response.headers());
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| Error::transport(&Method::GET, &url, e))?;
                if parse_index(&bytes).is_none() {
                    self.referrers_api.store(2, Relaxed);
                    return Ok(None);
                }
                self.referrers_api.store(1, Relaxed);
                Ok(Some(ReferrersPage {
                    bytes,
                    content_type,
                    filters_applied,
                    next,
                }))
            })
            .await
    }

    /// Whether the registry has the referrers API, as far as this client has seen.
    pub(super) fn knows_referrers_api(&self) -> Option<bool> {
        match self.referrers_api.load(Relaxed) {
            0 => None,
            known => Some(known == 1),
        }
    }
}
