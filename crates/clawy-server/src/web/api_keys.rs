//! `/api-keys`: list, create, regenerate, revoke (AUTH-2). A new secret is shown once,
//! on the response to the POST that made it (`no-store`), and never again.

use axum::Router;
use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::NaiveDate;
use clawy_core::SecretString;
use clawy_core::accounts::AccountError;
use clawy_core::actor::Tier;
use clawy_core::api_keys::NewApiKey;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::context::{CsrfOnly, Flash, SignedIn, Web, redirect_with_flash};
use super::error::field_error;
use super::render::page;
use super::{FieldErrors, INVALID_FORM, WebError, WebResult, show_time};
use crate::pagination::PageQuery;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api-keys", get(list_page).post(create))
        .route("/api-keys/{id}/regenerate", post(regenerate))
        .route("/api-keys/{id}/revoke", post(revoke))
}

#[derive(Serialize)]
struct TierOption {
    value: &'static str,
    label: &'static str,
}

const TIERS: [TierOption; 3] = [
    TierOption {
        value: "read",
        label: "read — view only",
    },
    TierOption {
        value: "manage",
        label: "manage — + instances and SSH keys",
    },
    TierOption {
        value: "admin",
        label: "admin — + API keys and account",
    },
];

#[derive(Serialize)]
struct KeyRow {
    id: String,
    name: String,
    tier: &'static str,
    prefix: String,
    created: String,
    created_iso: String,
    last_used: Option<String>,
    last_used_iso: Option<String>,
    expires: Option<String>,
    expires_iso: Option<String>,
    expired: bool,
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
struct CreateForm {
    #[serde(skip_serializing)]
    csrf_token: String,
    name: String,
    tier: String,
    expires_on: String,
    /// AUTH-2 re-authentication for admin keys; never echoed back into the page.
    #[serde(skip_serializing)]
    password: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RegenerateForm {
    csrf_token: String,
    password: String,
}

impl Default for CreateForm {
    fn default() -> Self {
        // Least privilege by default.
        CreateForm {
            csrf_token: String::new(),
            name: String::new(),
            tier: "read".to_owned(),
            expires_on: String::new(),
            password: String::new(),
        }
    }
}

async fn render_list(
    web: &mut Web,
    user_id: &str,
    q: &PageQuery,
    status: StatusCode,
    form: &CreateForm,
    errors: FieldErrors,
) -> WebResult {
    let now = web.state.core.now();
    let all = web.state.core.api_keys().list(user_id).await?;
    let (keys, pager) = q.rows_of(
        "/api-keys",
        all,
        |k| k.id.clone(),
        |k| {
            let (created, created_iso) = show_time(k.created_at);
            let last = k.last_used_at.map(show_time);
            let exp = k.expires_at.map(show_time);
            KeyRow {
                expired: k.is_expired_at(now),
                id: k.id,
                name: k.name,
                tier: k.tier.as_str(),
                prefix: k.prefix,
                created,
                created_iso,
                last_used: last.as_ref().map(|l| l.0.clone()),
                last_used_iso: last.map(|l| l.1),
                expires: exp.as_ref().map(|e| e.0.clone()),
                expires_iso: exp.map(|e| e.1),
            }
        },
    )?;
    let layout = web.layout("API keys", "api_keys");
    let resp = page(
        status,
        "api_keys.html",
        &layout,
        context! { keys, form, errors, tiers => TIERS, pager },
    );
    Ok(web.finish(resp))
}

async fn list_page(
    SignedIn { mut web, session }: SignedIn,
    Query(q): Query<PageQuery>,
) -> WebResult {
    render_list(
        &mut web,
        &session.user.id,
        &q,
        StatusCode::OK,
        &CreateForm::default(),
        FieldErrors::new(),
    )
    .await
}

/// The page that shows a new secret, once.
fn render_secret(web: &mut Web, new: &NewApiKey, regenerated: bool) -> WebResult {
    let title = if regenerated {
        "API key regenerated"
    } else {
        "API key created"
    };
    let layout = web.layout(title, "api_keys");
    let resp = page(
        StatusCode::OK,
        "api_key_created.html",
        &layout,
        context! {
            key => context! { name => new.api_key.name.clone(), tier => new.api_key.tier.as_str() },
            secret => new.key.expose(),
            regenerated,
        },
    );
    Ok(web.finish(resp))
}

async fn create(SignedIn { mut web, session }: SignedIn, Form(f): Form<CreateForm>) -> WebResult {
    let user_id = session.user.id.clone();
    web.check_form(&f.csrf_token)?;
    let mut errors = FieldErrors::new();
    let mut status = INVALID_FORM;
    let tier = match f.tier.parse::<Tier>() {
        Ok(t) => Some(t),
        Err(_) => {
            errors.insert("tier", "Choose read, manage or admin.".to_owned());
            None
        }
    };
    let expires_at = match f.expires_on.trim() {
        "" => None,
        s => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            // The key works through the whole chosen day (UTC).
            Ok(d) => d.and_hms_opt(23, 59, 59).map(|t| t.and_utc()),
            Err(_) => {
                errors.insert("expires_on", "Enter a date like 2027-01-31.".to_owned());
                None
            }
        },
    };
    if tier == Some(Tier::Admin) && errors.is_empty() {
        // AUTH-2: a session cookie alone does not mint an admin key.
        let confirmed = web
            .state
            .core
            .accounts()
            .confirm_password(
                &user_id,
                &SecretString::from(f.password.clone()),
                &web.actor(),
            )
            .await;
        match confirmed {
            Ok(()) => {}
            Err(AccountError::WrongCurrentPassword) => {
                errors.insert(
                    "password",
                    "Enter your current password to create an admin key.".to_owned(),
                );
            }
            Err(AccountError::Throttled { retry_after }) => {
                return Err(WebError::Throttled { retry_after });
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let (Some(tier), true) = (tier, errors.is_empty()) {
        // A browser session has the account's full rights: no creator tier.
        let result = web
            .state
            .core
            .api_keys()
            .create(&user_id, &f.name, tier, expires_at, None, &web.actor())
            .await;
        match result {
            Ok(new) => return render_secret(&mut web, &new, false),
            Err(e) => {
                status = field_error(
                    e,
                    &[
                        ("name", "name"),
                        ("tier", "tier"),
                        ("expires_at", "expires_on"),
                    ],
                    &mut errors,
                )?
            }
        }
    }
    render_list(
        &mut web,
        &user_id,
        &PageQuery::default(),
        status,
        &f,
        errors,
    )
    .await
}

async fn regenerate(
    SignedIn { mut web, session }: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<RegenerateForm>,
) -> WebResult {
    let user_id = session.user.id;
    web.check_form(&f.csrf_token)?;
    let key = web.state.core.api_keys().get(&user_id, &id).await?;
    if key.tier == Tier::Admin {
        // AUTH-2: as for creating one.
        let confirmed = web
            .state
            .core
            .accounts()
            .confirm_password(&user_id, &SecretString::from(f.password), &web.actor())
            .await;
        match confirmed {
            Ok(()) => {}
            Err(AccountError::WrongCurrentPassword) => {
                let mut errors = FieldErrors::new();
                errors.insert(
                    "_form",
                    "Regenerating an admin key needs your current password.".to_owned(),
                );
                return render_list(
                    &mut web,
                    &user_id,
                    &PageQuery::default(),
                    INVALID_FORM,
                    &CreateForm::default(),
                    errors,
                )
                .await;
            }
            Err(AccountError::Throttled { retry_after }) => {
                return Err(WebError::Throttled { retry_after });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let new = web
        .state
        .core
        .api_keys()
        .regenerate(&user_id, &id, None, &web.actor())
        .await?;
    render_secret(&mut web, &new, true)
}

async fn revoke(
    SignedIn { web, session }: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> WebResult {
    let user_id = session.user.id;
    web.check_form(&f.csrf_token)?;
    web.state
        .core
        .api_keys()
        .revoke(&user_id, &id, &web.actor())
        .await?;
    Ok(web.finish(redirect_with_flash("/api-keys", Flash::ApiKeyRevoked)))
}
