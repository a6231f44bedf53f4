"""HTML face of the community board: list with live search, issue pages, HTMX partials."""

from __future__ import annotations

import re

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from portal.community import drafts, fixes, issues, markdown, search, uploads
from portal.errors import PortalError
from portal.web import is_htmx, login_required

bp = Blueprint("community", __name__)


def _wants_partial(target: str) -> bool:
    return is_htmx() and request.headers.get("HX-Target") == target


def _list_ctx():
    lq = search.parse_list_args(request.args, default_limit=20, max_limit=100)
    rows, total = search.list_issues(g.user, lq)
    args = {k: v for k, v in request.args.items() if k not in ("offset",) and v}
    return {
        "issues": rows,
        "total": total,
        "lq": lq,
        "args": args,
        "prev_offset": max(lq.offset - lq.limit, 0) if lq.offset > 0 else None,
        "next_offset": lq.offset + lq.limit if lq.offset + lq.limit < total else None,
    }


@bp.get("/community")
@login_required
def index():
    try:
        ctx = _list_ctx()
        error = None
    except PortalError as err:
        ctx = {"issues": [], "total": 0, "lq": search.ListQuery(), "args": {},
               "prev_offset": None, "next_offset": None}  # fmt: skip
        error = err.message
    if _wants_partial("issue-list"):
        resp = make_response(render_template("community/_list.html", error=error, **ctx))
        return resp, (400 if error else 200)
    ctx["tags"] = search.popular_tags()
    return render_template("community/index.html", error=error, **ctx), (400 if error else 200)


# ---------------------------------------------------------------- new / edit / delete


@bp.route("/community/issues/new", methods=["GET", "POST"])
@login_required
def new_issue():
    if request.method == "POST":
        errors = issues.issue_field_errors(request.form)
        if errors:
            return _issue_form(request.form, errors, None, 422)
        try:
            issue = issues.create_issue(g.user, request.form)
        except PortalError as err:
            return _issue_form(request.form, {err.field or "_form": err.message}, None, 422)
        return redirect(url_for("community.issue", issue_id=issue.id), 303)
    form = {"title": "", "body": "", "tags": ""}
    from_log = request.args.get("from_log")
    if from_log:
        # Prefill only; nothing is saved until the user submits the form.
        form = drafts.draft_from_log(g.user, from_log)
    return _issue_form(form, {}, None)


def _issue_form(form, errors, issue, status: int = 200):
    return render_template("community/form.html", form=form, errors=errors, issue=issue), status


@bp.route("/community/issues/<int:issue_id>/edit", methods=["GET", "POST"])
@login_required
def edit_issue(issue_id: int):
    issue = issues.get_issue(issue_id)
    issues.check_can_edit(g.user, issue)
    if request.method == "POST":
        errors = issues.issue_field_errors(request.form)
        if errors:
            return _issue_form(request.form, errors, issue, 422)
        try:
            issues.update_issue(g.user, issue, request.form)
        except PortalError as err:
            return _issue_form(request.form, {err.field or "_form": err.message}, issue, 422)
        return redirect(url_for("community.issue", issue_id=issue.id), 303)
    form = {"title": issue.title, "body": issue.body, "tags": ", ".join(issue.tags)}
    return _issue_form(form, {}, issue)


@bp.post("/community/issues/<int:issue_id>/delete")
@login_required
def delete_issue(issue_id: int):
    issue = issues.get_issue(issue_id)
    issues.check_can_edit(g.user, issue)
    issues.delete_issue(g.user, issue)
    flash("The issue was deleted.", "success")
    if is_htmx():
        resp = make_response("", 200)
        resp.headers["HX-Redirect"] = url_for("community.index")
        return resp
    return redirect(url_for("community.index"), 303)


# ---------------------------------------------------------------- issue page and its parts


def _thread_ctx(issue):
    rows = fixes.list_fixes(issue)
    return {
        "issue": issue,
        "fixes": rows,
        "liked": fixes.liked_fix_ids(g.user, rows),
        "can_accept": issues.can_accept(g.user, issue),
    }


@bp.get("/community/issues/<int:issue_id>")
@login_required
def issue(issue_id: int):
    issue = issues.get_issue(issue_id)
    ctx = _thread_ctx(issue)
    return render_template(
        "community/issue.html",
        can_edit=issues.can_edit(g.user, issue),
        form={"body": ""},
        errors={},
        **ctx,
    )


@bp.post("/community/issues/<int:issue_id>/fixes")
@login_required
def post_fix(issue_id: int):
    issue = issues.get_issue(issue_id)
    try:
        fix = fixes.create_fix(g.user, issue, request.form)
    except PortalError as err:
        if not is_htmx():
            ctx = _thread_ctx(issue)
            return render_template(
                "community/issue.html",
                can_edit=issues.can_edit(g.user, issue),
                form=request.form,
                errors={err.field or "_form": err.message},
                **ctx,
            ), 422
        return render_template(
            "community/_fix_form.html",
            issue=issue,
            form=request.form,
            errors={err.field or "_form": err.message},
        ), 422
    if not is_htmx():
        return redirect(url_for("community.issue", issue_id=issue.id, _anchor=f"fix-{fix.id}"), 303)
    return render_template(
        "community/_fix_posted.html", form={"body": ""}, errors={}, **_thread_ctx(issue)
    )


def _like_response(issue, fix, liked: bool):
    if not is_htmx():
        return redirect(url_for("community.issue", issue_id=issue.id, _anchor=f"fix-{fix.id}"), 303)
    return render_template("community/_like.html", issue=issue, fix=fix, liked=liked)


@bp.post("/community/issues/<int:issue_id>/fixes/<int:fix_id>/like")
@login_required
def like(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    _, liked = fixes.like_fix(g.user, issue, fix)
    return _like_response(issue, fix, liked)


@bp.post("/community/issues/<int:issue_id>/fixes/<int:fix_id>/unlike")
@login_required
def unlike(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    _, liked = fixes.unlike_fix(g.user, issue, fix)
    return _like_response(issue, fix, liked)


def _accept_response(issue):
    if not is_htmx():
        return redirect(url_for("community.issue", issue_id=issue.id), 303)
    return render_template("community/_accepted.html", **_thread_ctx(issue))


@bp.post("/community/issues/<int:issue_id>/fixes/<int:fix_id>/accept")
@login_required
def accept(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    fixes.accept_fix(g.user, issue, fix)
    return _accept_response(issue)


@bp.post("/community/issues/<int:issue_id>/fixes/<int:fix_id>/unaccept")
@login_required
def unaccept(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    fixes.unaccept_fix(g.user, issue, fix)
    return _accept_response(issue)


@bp.post("/community/preview")
@login_required
def preview():
    body = request.form.get("body", "")
    if not isinstance(body, str) or len(body) > issues.BODY_MAX:
        return render_template(
            "community/_preview.html", html=None, error="too long to preview"
        ), 413
    return render_template("community/_preview.html", html=markdown.render(body), error=None)


# ---------------------------------------------------------------- uploaded images


@bp.get("/community/uploads/<filename>")
@login_required
def upload_file(filename: str):
    m = re.fullmatch(uploads.FILENAME, filename)
    if not m:
        abort(404)
    resp = send_from_directory(
        uploads.uploads_dir(),
        filename,
        mimetype=uploads.CONTENT_TYPES[m.group(1)],
        max_age=86400,
        conditional=True,
    )
    # Even if a browser were to sniff, it gets nothing to run.
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    resp.headers["Cache-Control"] = "private, max-age=86400, immutable"
    return resp


@bp.app_template_filter("community_url")
def _community_url(args: dict, **changes) -> str:
    merged = {**args, **{k: v for k, v in changes.items()}}
    merged = {k: v for k, v in merged.items() if v not in (None, "", False)}
    return url_for("community.index", **merged)
