"""JSON face of the community board (WebXTerm Community API paths)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from portal.community import fixes, issues, search, uploads
from portal.web import api_login_required, json_body

bp = Blueprint("community_api", __name__, url_prefix="/api/community")


def _issue_json(issue):
    return {"issue": issue.to_dict()}


@bp.get("/issues")
@api_login_required
def list_issues():
    lq = search.parse_list_args(request.args, default_limit=50, max_limit=200)
    rows, total = search.list_issues(g.user, lq)
    accepted = search.accepted_ids(rows)
    return jsonify(
        issues=[i.to_dict(accepted_fix_id=accepted.get(i.id)) for i in rows],
        total=total,
        limit=lq.limit,
        offset=lq.offset,
    )


@bp.post("/issues")
@api_login_required
def create_issue():
    issue = issues.create_issue(g.user, json_body())
    return jsonify(_issue_json(issue)), 201


@bp.get("/issues/<int:issue_id>")
@api_login_required
def get_issue(issue_id: int):
    return jsonify(_issue_json(issues.get_issue(issue_id)))


@bp.put("/issues/<int:issue_id>")
@bp.patch("/issues/<int:issue_id>")
@api_login_required
def update_issue(issue_id: int):
    issue = issues.get_issue(issue_id)
    issues.check_can_edit(g.user, issue)
    issue = issues.update_issue(g.user, issue, json_body())
    return jsonify(_issue_json(issue))


@bp.delete("/issues/<int:issue_id>")
@api_login_required
def delete_issue(issue_id: int):
    issue = issues.get_issue(issue_id)
    issues.check_can_edit(g.user, issue)
    issues.delete_issue(g.user, issue)
    return "", 204


@bp.get("/issues/<int:issue_id>/fixes")
@api_login_required
def list_fixes(issue_id: int):
    issue = issues.get_issue(issue_id)
    rows = fixes.list_fixes(issue)
    liked = fixes.liked_fix_ids(g.user, rows)
    return jsonify(fixes=[f.to_dict(liked_by_me=f.id in liked) for f in rows])


@bp.post("/issues/<int:issue_id>/fixes")
@api_login_required
def create_fix(issue_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.create_fix(g.user, issue, json_body())
    return jsonify(fix=fix.to_dict()), 201


@bp.post("/issues/<int:issue_id>/fixes/<int:fix_id>/like")
@api_login_required
def like(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    likes, liked = fixes.like_fix(g.user, issue, fix)
    return jsonify(likes=likes, liked=liked)


@bp.delete("/issues/<int:issue_id>/fixes/<int:fix_id>/like")
@api_login_required
def unlike(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    likes, liked = fixes.unlike_fix(g.user, issue, fix)
    return jsonify(likes=likes, liked=liked)


@bp.post("/issues/<int:issue_id>/fixes/<int:fix_id>/accept")
@api_login_required
def accept(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    fixes.accept_fix(g.user, issue, fix)
    liked = fixes.liked_fix_ids(g.user, [fix])
    return jsonify(fix=fix.to_dict(liked_by_me=fix.id in liked), issue=issue.to_dict())


@bp.delete("/issues/<int:issue_id>/fixes/<int:fix_id>/accept")
@api_login_required
def unaccept(issue_id: int, fix_id: int):
    issue = issues.get_issue(issue_id)
    fix = fixes.get_fix(issue, fix_id)
    fixes.unaccept_fix(g.user, issue, fix)
    liked = fixes.liked_fix_ids(g.user, [fix])
    return jsonify(fix=fix.to_dict(liked_by_me=fix.id in liked), issue=issue.to_dict())


@bp.post("/upload")
@api_login_required
def upload():
    att = uploads.save_upload(g.user, request.files.get("file"))
    return jsonify(
        url=uploads.upload_url(att),
        width=att.width,
        height=att.height,
        content_type=att.content_type,
        size=att.size,
    )
