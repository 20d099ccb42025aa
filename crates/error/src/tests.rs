use super::*;

#[test]
fn a_grpc_status_carries_the_reason_and_the_field_violations_and_reads_back_the_same() {
    let error = Error::invalid(vec![
        Violation {
            field: "user_name".into(),
            description: "is required".into(),
        },
        Violation {
            field: "profile.emails[0].value".into(),
            description: "is not an email address".into(),
        },
    ])
    .with_reason("USER_INPUT_INVALID");
    let status = error.to_status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "user_name: is required; profile.emails[0].value: is not an email address"
    );
    let back = Error::from_status(&status);
    assert_eq!(back.reason, "USER_INPUT_INVALID");
    assert_eq!(back.violations, error.violations);
    assert_eq!(back.code, Code::InvalidArgument);
}

#[test]
fn a_foreign_status_without_details_gets_the_codes_default_reason() {
    let back = Error::from_status(&tonic::Status::aborted("changed"));
    assert_eq!(back.code, Code::Conflict);
    assert_eq!(back.reason, "CONCURRENT_CHANGE");
}

#[test]
fn scim_renders_status_and_keyword_and_412_only_when_pinned() {
    let conflict = Error::new(Code::Conflict, "changed concurrently");
    assert_eq!(conflict.to_scim(false).status, 409);
    assert_eq!(conflict.to_scim(true).status, 412);
    let taken = Error::new(Code::AlreadyExists, "userName taken").to_scim(false);
    assert_eq!((taken.status, taken.scim_type), (409, Some(ScimType::Uniqueness)));
    let filter = Error::invalid_field("filter", "bad").with_scim_type(ScimType::InvalidFilter);
    assert_eq!(filter.to_scim(false).scim_type, Some(ScimType::InvalidFilter));
}

#[test]
fn problem_json_names_the_reason_and_the_invalid_params() {
    let body = Error::invalid_field("min_position", "not a position").problem();
    assert_eq!(body["status"], 400);
    assert_eq!(body["reason"], "INVALID_ARGUMENT");
    assert_eq!(body["invalid_params"][0]["name"], "min_position");
    let body = Error::not_found("group member").problem();
    assert_eq!(body["reason"], "GROUP_MEMBER_NOT_FOUND");
    assert_eq!(body["status"], 404);
}

#[test]
fn an_internal_or_unavailable_cause_is_logged_never_sent() {
    for error in [
        Error::internal("row 7 of projections.users has a NULL user_name"),
        Error::unavailable("connection refused by 10.0.0.1:5432"),
    ] {
        let status = error.to_status();
        assert!(!status.message().contains("10.0.0.1"), "{}", status.message());
        assert!(!status.message().contains("NULL"), "{}", status.message());
        let problem = error.problem().to_string();
        assert!(
            !problem.contains("10.0.0.1") && !problem.contains("NULL"),
            "{problem}"
        );
    }
}

#[test]
fn unimplemented_is_501_in_http_and_scim_and_unimplemented_in_grpc() {
    let error = Error::new(Code::Unimplemented, "/Me is not supported");
    assert_eq!(error.to_status().code(), tonic::Code::Unimplemented);
    assert_eq!(error.to_scim(false).status, 501);
    assert_eq!(error.problem()["status"], 501);
    assert_eq!(Error::from_status(&error.to_status()).code, Code::Unimplemented);
}
