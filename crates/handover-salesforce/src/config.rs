//! Where the adapter talks to: the values of the Embedded Service deployment's code snippet.

use std::time::Duration;

use crate::attachments::AttachmentPolicy;

/// One Embedded Service deployment of type Custom Client, with the adapter's timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiawConfig {
    /// The snippet's `Url` (https, or http for a local sandbox).
    pub base_url: String,
    /// The snippet's `OrganizationId`; an 18-character id is cut to the 15 Salesforce expects.
    pub org_id: String,
    /// The snippet's `DeveloperName` (`esDeveloperName`).
    pub developer_name: String,
    /// `context.appName` of token requests.
    pub app_name: String,
    /// `context.clientVersion` of token requests.
    pub client_version: String,
    /// Every REST call gives up after this long.
    pub request_timeout: Duration,
    /// Connecting gives up after this long (REST and stream).
    pub connect_timeout: Duration,
    /// The stream's response headers must arrive within this long.
    pub stream_open_timeout: Duration,
    /// Largest file uploaded; larger ones are refused before upload (Salesforce: 5 MB).
    pub max_file_bytes: u64,
    /// Where user files may be downloaded from (allow-list, no private addresses by
    /// default, every redirect checked).
    pub attachments: AttachmentPolicy,
    /// Token requests (mints) sent at most per minute, evenly spaced. Salesforce allows 200
    /// per org and minute; a burst of handovers beyond it would get 429s and fail, so mints
    /// wait their turn here instead. Per client: with several bridge instances on one org,
    /// give each its share.
    pub token_requests_per_minute: u32,
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Salesforce setting `{field}`: {problem}")]
pub struct MiawConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl MiawConfig {
    /// A configuration with the default timeouts and limits.
    pub fn new(
        base_url: impl Into<String>,
        org_id: impl Into<String>,
        developer_name: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            org_id: org_id.into(),
            developer_name: developer_name.into(),
            app_name: "handover-bridge".to_owned(),
            client_version: env!("CARGO_PKG_VERSION").to_owned(),
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            stream_open_timeout: Duration::from_secs(15),
            max_file_bytes: 5 * 1024 * 1024,
            attachments: AttachmentPolicy::default(),
            token_requests_per_minute: 180,
        }
    }

    /// Checks the values and normalises them: no trailing slash on the URL, a 15-character
    /// org id.
    pub fn validated(mut self) -> Result<Self, MiawConfigError> {
        let fail = |field, problem| Err(MiawConfigError { field, problem });
        let url = self.base_url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return fail(
                "base_url",
                "must start with https:// (or http:// for a local sandbox)",
            );
        }
        self.base_url = url;
        if self.token_requests_per_minute == 0 {
            return fail("token_requests_per_minute", "must be at least 1");
        }
        let org = self.org_id.trim().to_owned();
        if !(org.len() == 15 || org.len() == 18) || !org.starts_with("00D") || !org.is_ascii() {
            return fail(
                "org_id",
                "must be a 15- or 18-character org id starting with 00D",
            );
        }
        // `X-Org-Id` must be the 15-character id, or Salesforce answers "OrgId in the header
        // and token must match" (miaw-api.md §7).
        self.org_id = org[..15].to_owned();
        if self.developer_name.trim().is_empty() {
            return fail("developer_name", "must not be empty");
        }
        if self.request_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.stream_open_timeout.is_zero()
        {
            return fail("request_timeout", "timeouts must be longer than zero");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids_are_cut_to_15_and_bad_values_name_the_field() {
        let config = MiawConfig::new(
            "https://x.my.salesforce-scrt.com/",
            "00D5e000000SBOXAAA",
            "Dep",
        )
        .validated()
        .map(|c| (c.base_url, c.org_id));
        assert_eq!(
            config,
            Ok((
                "https://x.my.salesforce-scrt.com".to_owned(),
                "00D5e000000SBOX".to_owned()
            ))
        );
        let error = MiawConfig::new("ftp://x", "00D5e000000SBOX", "Dep")
            .validated()
            .unwrap_err();
        assert_eq!(error.field, "base_url");
        let error = MiawConfig::new("https://x", "005000000000000", "Dep")
            .validated()
            .unwrap_err();
        assert_eq!(error.field, "org_id");
    }
}
