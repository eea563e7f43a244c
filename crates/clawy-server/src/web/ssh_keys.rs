//! `/ssh-keys`: list, add, delete the public keys installed on the user's VMs (AUTH-4).

use axum::Router;
use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clawy_core::ssh_keys::SshKeyError;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::context::{CsrfOnly, Flash, SignedIn, Web, redirect_with_flash};
use super::error::field_error;
use super::render::page;
use super::{FieldErrors, WebResult, show_time};
use crate::pagination::PageQuery;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ssh-keys", get(list_page).post(add))
        .route("/ssh-keys/{id}/delete", post(delete))
}

#[derive(Serialize)]
struct KeyRow {
    id: String,
    name: String,
    algorithm: String,
    fingerprint: String,
    created: String,
    created_iso: String,
}

#[derive(Default, Deserialize, Serialize)]
#[serde(default)]
struct AddForm {
    #[serde(skip_serializing)]
    csrf_token: String,
    name: String,
    public_key: String,
}

async fn render_list(
    web: &mut Web,
    user_id: &str,
    q: &PageQuery,
    status: StatusCode,
    form: &AddForm,
    errors: FieldErrors,
) -> WebResult {
    let all = web.state.core.ssh_keys().list(user_id).await?;
    let (keys, pager) = q.rows_of(
        "/ssh-keys",
        all,
        |k| k.id.clone(),
        |k| {
            let (created, created_iso) = show_time(k.created_at);
            KeyRow {
                id: k.id,
                name: k.name,
                algorithm: k.algorithm,
                fingerprint: k.fingerprint,
                created,
                created_iso,
            }
        },
    )?;
    let layout = web.layout("SSH keys", "ssh_keys");
    let resp = page(
        status,
        "ssh_keys.html",
        &layout,
        context! { keys, form, errors, pager },
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
        &AddForm::default(),
        FieldErrors::new(),
    )
    .await
}

async fn add(SignedIn { mut web, session }: SignedIn, Form(f): Form<AddForm>) -> WebResult {
    let user_id = session.user.id.clone();
    web.check_form(&f.csrf_token)?;
    let result = web
        .state
        .core
        .ssh_keys()
        .add(&user_id, &f.name, &f.public_key, &web.actor())
        .await;
    let mut errors = FieldErrors::new();
    let (status, private_key_pasted) = match result {
        Ok(_) => return Ok(web.finish(redirect_with_flash("/ssh-keys", Flash::SshKeyAdded))),
        Err(e) => {
            let private = matches!(e, SshKeyError::PrivateKey);
            let status = field_error(
                e,
                &[("public_key", "public_key"), ("name", "name")],
                &mut errors,
            )?;
            (status, private)
        }
    };
    // A pasted private key is never echoed back into the page.
    let form = if private_key_pasted {
        AddForm {
            public_key: String::new(),
            ..f
        }
    } else {
        f
    };
    render_list(
        &mut web,
        &user_id,
        &PageQuery::default(),
        status,
        &form,
        errors,
    )
    .await
}

async fn delete(
    SignedIn { web, session }: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> WebResult {
    let user_id = session.user.id;
    web.check_form(&f.csrf_token)?;
    web.state
        .core
        .ssh_keys()
        .delete(&user_id, &id, &web.actor())
        .await?;
    Ok(web.finish(redirect_with_flash("/ssh-keys", Flash::SshKeyDeleted)))
}
