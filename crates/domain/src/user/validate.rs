//! Normalising and checking a human profile: what the value types cannot enforce on their own
//! (single primary entries, lengths of free text, sizes of lists, duplicate addresses).

use super::profile::{HumanProfile, MAX_EXTRA_BYTES, MAX_MULTI_VALUED, MAX_TEXT};
use crate::Violations;
use crate::values::check_text;
use std::collections::HashSet;

impl HumanProfile {
    /// Keeps the entries as given (SCIM does not require a primary one; [`HumanProfile::primary_email`]
    /// falls back to the first); verification carries over to an address that was verified in
    /// `previous` (a SCIM `PUT` repeating an address does not un-verify it).
    pub(crate) fn normalize(&mut self, previous: Option<&HumanProfile>) {
        if let Some(previous) = previous {
            let verified: HashSet<String> = previous
                .emails
                .iter()
                .filter(|e| e.verified)
                .map(|e| e.value.normalized())
                .collect();
            for email in &mut self.emails {
                email.verified |= verified.contains(&email.value.normalized());
            }
        }
    }

    /// Checks everything the value types cannot: lengths of free text, sizes of lists, a single
    /// primary entry, no duplicate email address.
    pub(crate) fn check(&self, v: &mut Violations) {
        let mut text = |field: &str, value: &Option<String>, max: usize| {
            if let Some(Err(e)) = value.as_deref().map(|t| check_text(t, max)) {
                v.push(field, e.description);
            }
        };
        let n = &self.name;
        text("name.formatted", &n.formatted, MAX_TEXT);
        text("name.family_name", &n.family_name, MAX_TEXT);
        text("name.given_name", &n.given_name, MAX_TEXT);
        text("name.middle_name", &n.middle_name, MAX_TEXT);
        text("name.honorific_prefix", &n.honorific_prefix, MAX_TEXT);
        text("name.honorific_suffix", &n.honorific_suffix, MAX_TEXT);
        text("nick_name", &self.nick_name, MAX_TEXT);
        text("profile_url", &self.profile_url, 2 * MAX_TEXT);
        text("title", &self.title, MAX_TEXT);
        text("user_type", &self.user_type, MAX_TEXT);
        text("locale", &self.locale, 64);
        text("timezone", &self.timezone, 64);
        text("external_id", &self.external_id, MAX_TEXT);
        for (i, e) in self.emails.iter().enumerate() {
            text(&format!("emails[{i}].type"), &e.kind, 64);
        }
        for (i, p) in self.phone_numbers.iter().enumerate() {
            text(&format!("phone_numbers[{i}].type"), &p.kind, 64);
        }
        for (i, a) in self.addresses.iter().enumerate() {
            for (part, value) in [
                ("formatted", &a.formatted),
                ("street_address", &a.street_address),
                ("locality", &a.locality),
                ("region", &a.region),
                ("postal_code", &a.postal_code),
                ("country", &a.country),
            ] {
                text(&format!("addresses[{i}].{part}"), value, MAX_TEXT);
            }
            text(&format!("addresses[{i}].type"), &a.kind, 64);
        }
        if let Some(ent) = &self.enterprise {
            for (part, value) in [
                ("employee_number", &ent.employee_number),
                ("cost_center", &ent.cost_center),
                ("organization", &ent.organization),
                ("division", &ent.division),
                ("department", &ent.department),
            ] {
                text(&format!("enterprise.{part}"), value, MAX_TEXT);
            }
            if let Some(m) = &ent.manager {
                text("enterprise.manager.value", &m.value, MAX_TEXT);
                text("enterprise.manager.display_name", &m.display_name, MAX_TEXT);
            }
        }
        check_list(v, "emails", self.emails.iter().map(|e| e.primary));
        check_list(v, "phone_numbers", self.phone_numbers.iter().map(|p| p.primary));
        check_list(v, "addresses", self.addresses.iter().map(|a| a.primary));
        let mut seen = HashSet::new();
        for (i, e) in self.emails.iter().enumerate() {
            if !seen.insert(e.value.normalized()) {
                v.push(format!("emails[{i}].value"), "is listed twice");
            }
        }
        let extra_size = serde_json::to_vec(&self.extra).map_or(usize::MAX, |b| b.len());
        if extra_size > MAX_EXTRA_BYTES {
            v.push("extra", format!("must be at most {MAX_EXTRA_BYTES} bytes"));
        }
    }
}

fn check_list(v: &mut Violations, field: &str, primaries: impl ExactSizeIterator<Item = bool>) {
    if primaries.len() > MAX_MULTI_VALUED {
        v.push(field, format!("must have at most {MAX_MULTI_VALUED} entries"));
    }
    if primaries.filter(|p| *p).count() > 1 {
        v.push(field, "at most one entry may be primary");
    }
}
