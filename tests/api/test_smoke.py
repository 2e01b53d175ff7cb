from tests.support import MIB, random_bytes, sha256


def test_upload_round_trip(api, worker):
    data = random_bytes(2 * MIB + 123)
    done = api.upload(data, chunk_size=MIB)
    assert done.status_code == 200, done.get_json()
    file = done.get_json()
    assert file["hash"] == sha256(data) and file["size"] == len(data)
    downloaded = api.get(f"/files/{file['id']}/download")
    assert downloaded.status_code == 200
    assert sha256(downloaded.data) == sha256(data)
