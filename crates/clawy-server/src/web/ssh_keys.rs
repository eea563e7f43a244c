//! `/ssh-keys`: list, add, delete the public keys installed on the user's VMs (AUTH-4).

use axum::Router;
use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::routing::{get, post};
use clawy_core::ssh_keys::SshKeyError;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth_pages::field_error;
use super::context::{Flash, Web, redirect_with_flash};
use super::render::page;
use super::{FieldErrors, INVALID_FORM, WebResult, show_time};
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
    status: StatusCode,
    form: &AddForm,
    errors: FieldErrors,
) -> WebResult {
    let user_id = web.require_user()?.user.id.clone();
    let keys: Vec<KeyRow> = web
        .state
        .core
        .ssh_keys()
        .list(&user_id)
        .await?
        .into_iter()
        .map(|k| {
            let (created, created_iso) = show_time(k.created_at);
            KeyRow {
                id: k.id,
                name: k.name,
                algorithm: k.algorithm,
                fingerprint: k.fingerprint,
                created,
                created_iso,
            }
        })
        .collect();
    let layout = web.layout("SSH keys", "ssh_keys");
    let resp = page(
        status,
        "ssh_keys.html",
        &layout,
        context! { keys, form, errors },
    );
    Ok(web.finish(resp))
}

async fn list_page(mut web: Web) -> WebResult {
    render_list(
        &mut web,
        StatusCode::OK,
        &AddForm::default(),
        FieldErrors::new(),
    )
    .await
}

async fn add(mut web: Web, Form(f): Form<AddForm>) -> WebResult {
    let user_id = web.require_user()?.user.id.clone();
    web.check_form(&f.csrf_token)?;
    let result = web
        .state
        .core
        .ssh_keys()
        .add(&user_id, &f.name, &f.public_key, &web.actor())
        .await;
    let mut errors = FieldErrors::new();
    let private_key_pasted = match result {
        Ok(_) => return Ok(web.finish(redirect_with_flash("/ssh-keys", Flash::SshKeyAdded))),
        Err(e) => {
            let private = matches!(e, SshKeyError::PrivateKey);
            field_error(
                e,
                &[("public_key", "public_key"), ("name", "name")],
                &mut errors,
            )?;
            private
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
    render_list(&mut web, INVALID_FORM, &form, errors).await
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct CsrfOnly {
    csrf_token: String,
}

async fn delete(web: Web, Path(id): Path<String>, Form(f): Form<CsrfOnly>) -> WebResult {
    let user_id = web.require_user()?.user.id.clone();
    web.check_form(&f.csrf_token)?;
    web.state
        .core
        .ssh_keys()
        .delete(&user_id, &id, &web.actor())
        .await?;
    Ok(web.finish(redirect_with_flash("/ssh-keys", Flash::SshKeyDeleted)))
}
