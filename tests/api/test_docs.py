"""/api/openapi.json is a well-formed OpenAPI 3 document of the seed's API; /api/docs serves
Swagger UI whose assets load. Neither needs a token."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

# The seed's upload routes, with its parameter names.
UPLOAD_ROUTES = {
    "/files/upload/create": {"post"},
    "/files/upload/chunk/{taskId}/{chunkIndex}": {"post"},
    "/files/upload/complete/{taskId}": {"post"},
    "/files/upload/tasks": {"get"},
    "/files/upload/progress/{taskId}": {"get"},
    "/files/upload/resume/{taskId}": {"get"},
    "/files/upload/task/{taskId}": {"delete"},
    "/files/upload/tasks/{taskId}/details": {"get"},
    "/files/upload/stats": {"get"},
    "/files/upload/tasks/cleanup": {"delete"},
    "/files/upload/tasks/recent": {"get"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
TEMPLATE_PARAM = re.compile(r"\{([^{}]+)\}")


@pytest.fixture(scope="module")
def spec(app):
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200, response.data[:500]
    assert response.mimetype == "application/json"
    return response.get_json()


def operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_document_header(spec):
    assert re.fullmatch(r"3\.\d+\.\d+", spec["openapi"])
    assert isinstance(spec["info"]["title"], str) and spec["info"]["title"]
    assert isinstance(spec["info"]["version"], str) and spec["info"]["version"]
    assert spec["servers"] == [{"url": "/api"}]
    assert set(spec) <= {"openapi", "info", "servers", "paths", "components", "security", "tags", "externalDocs"}


def test_drive_prefix_serves_the_same_api(app, spec):
    drive = app.test_client().get("/drive/openapi.json")
    assert drive.status_code == 200
    body = drive.get_json()
    assert body["servers"] == [{"url": "/drive"}]
    assert body["paths"] == spec["paths"]


def test_every_upload_route_is_documented_with_the_seeds_parameters(spec):
    missing = sorted(path for path, methods in UPLOAD_ROUTES.items()
                     if not methods <= set(spec["paths"].get(path, {})))
    assert missing == [], f"not documented as in the seed: {missing}; documented: {sorted(spec['paths'])}"


def test_file_and_bundle_routes_are_documented(spec):
    paths = spec["paths"]
    file_item = [p for p in paths if re.fullmatch(r"/files/\{[^}]+\}", p)]
    assert len(file_item) == 1 and {"get", "delete"} <= set(paths[file_item[0]])
    assert [p for p in paths if re.fullmatch(r"/files/\{[^}]+\}/download", p)]
    assert "post" in paths["/bundles"] and "get" in paths["/bundles"]
    assert "get" in paths["/pools"]


def test_paths_are_well_formed(spec):
    operation_ids = []
    for path, method, operation in operations(spec):
        assert path.startswith("/") and not path.startswith("/api/") and "<" not in path, path
        declared = [p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"]
        assert sorted(declared) == sorted(TEMPLATE_PARAM.findall(path)), (path, method)
        for parameter in operation.get("parameters", []):
            assert parameter["in"] in {"path", "query", "header", "cookie"}
            assert "schema" in parameter or "content" in parameter
            if parameter["in"] == "path":
                assert parameter["required"] is True
        assert operation["responses"], (path, method)
        for status in operation["responses"]:
            assert status == "default" or re.fullmatch(r"[1-5]\d\d", status), (path, method, status)
        for response in operation["responses"].values():
            assert isinstance(response.get("description"), str)
        operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids)), "operationId must be unique"


def test_every_ref_resolves(spec):
    for ref in set(refs(spec)):
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            assert part in node, f"unresolved {ref}"
            node = node[part]


def test_schemas(spec):
    schemas = spec["components"]["schemas"]
    assert {"CreateUpload", "CloudFile", "Error"} <= set(schemas)
    create = schemas["CreateUpload"]
    assert {"fileName", "fileSize", "contentType", "hash"} <= set(create["required"])
    assert {"poolId", "bundleId", "chunkSize", "encryptPassword", "expiredAt"} <= set(create["properties"])
    cloud_file = schemas["CloudFile"]["properties"]
    assert {"id", "name", "description", "mimeType", "size", "hash", "fileMeta", "userMeta", "isEncrypted",
            "poolId", "bundleId", "accountId", "expiredAt", "uploadedAt", "createdAt", "updatedAt"} <= set(cloud_file)
    # nothing secret is part of the file's shape
    assert not {"encryption", "encryptPassword", "storageKey", "config"} & set(cloud_file)
    assert {"code", "message", "status", "details"} <= set(schemas["Error"]["properties"])
    assert "config" not in schemas["Pool"]["properties"]


def test_create_and_chunk_bodies(spec):
    create = spec["paths"]["/files/upload/create"]["post"]
    create_schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert create_schema == {"$ref": "#/components/schemas/CreateUpload"}
    chunk = next(op for path, method, op in operations(spec)
                 if path.startswith("/files/upload/chunk/") and method == "post")
    content = chunk["requestBody"]["content"]
    assert content["application/octet-stream"]["schema"]["format"] == "binary"
    assert "chunk" in content["multipart/form-data"]["schema"]["properties"]
    complete = next(op for path, method, op in operations(spec)
                    if path.startswith("/files/upload/complete/") and method == "post")
    assert complete["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CloudFile"}


def test_security(spec):
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer",
                                                              "bearerFormat": "JWT"}
    for path, method, operation in operations(spec):
        if path in ("/openapi.json", "/docs"):
            assert not operation.get("security"), path
        else:
            assert operation["security"] == [{"bearer": []}], (path, method)


class AssetCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.assets.append(attrs["href"])


@pytest.mark.parametrize("prefix", ["/api", "/drive"])
def test_docs_page_and_its_assets(client, prefix):
    page = client.get(f"{prefix}/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert f'"{prefix}/openapi.json"' in html
    collector = AssetCollector()
    collector.feed(html)
    names = {asset.rsplit("/", 1)[-1] for asset in collector.assets}
    assert {"swagger-ui.css", "swagger-ui-bundle.js"} <= names, collector.assets
    for asset in collector.assets:
        response = client.get(asset)
        try:
            assert response.status_code == 200, asset
            assert len(response.data) > 1000, asset
            expected = "text/css" if asset.endswith(".css") else "javascript"
            assert expected in response.content_type, (asset, response.content_type)
        finally:
            response.close()
    spec = client.get(f"{prefix}/openapi.json")
    assert spec.status_code == 200 and spec.get_json()["openapi"].startswith("3.")
