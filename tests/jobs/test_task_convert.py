"""FileConversion with a real worker: images converted between PNG, JPEG, WebP and GIF, resized
or not, opened with Pillow afterwards; unsupported pairs and non-images refused at creation."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.support import generic_task_count, EventListener, assert_error, random_bytes

FINAL = ("task.completed", "task.failed", "task.cancelled", "task.paused")
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


def image_bytes(fmt: str, size=(120, 80), mode="RGB", color=(200, 30, 60), **options) -> bytes:
    image = Image.new(mode, size, color)
    for x in range(0, size[0], 7):  # some detail, so the encoders have something to keep
        image.putpixel((x, x * size[1] // size[0]), (0, 0, 0) if mode == "RGB" else (0, 0, 0, 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def stored_file(api, data: bytes, name: str, content_type: str) -> str:
    done = api.upload(data, name=name, content_type=content_type)
    assert done.status_code == 200, done.get_json()
    return done.get_json()["id"]


def convert(api, redis, parameters: dict) -> dict:
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json={"type": "FileConversion", "priority": 80, "parameters": parameters})
    assert created.status_code == 201, created.get_json()
    task_id = created.get_json()["taskId"]
    while True:
        packet = listener.next(60)
        assert packet is not None, f"no end for {task_id}: {listener.packets}"
        if packet["data"].get("taskId") == task_id and packet["type"] in FINAL:
            break
    listener.close()
    return api.get(f"/tasks/{task_id}").get_json()


def result_image(api, task: dict) -> tuple[Image.Image, dict]:
    assert task["status"] == "Completed", task["errorMessage"]
    results = task["results"]
    meta = api.get(f"/files/{results['resultFileId']}").get_json()
    data = api.get(f"/files/{results['resultFileId']}/download").data
    assert len(data) == results["size"] == meta["size"]
    image = Image.open(io.BytesIO(data))
    assert image.format == results["format"] == meta["fileMeta"]["format"]
    assert image.size == (results["width"], results["height"]) == (meta["fileMeta"]["width"],
                                                                   meta["fileMeta"]["height"])
    assert meta["mimeType"] == MIME[image.format]
    return image, meta


@pytest.mark.parametrize("source, target, resize, expected_size, expected_name", [
    ("PNG", "jpeg", {}, (120, 80), "pic.jpg"),
    ("JPEG", "webp", {"quality": 60}, (120, 80), "pic.webp"),
    ("PNG", "gif", {"width": 60}, (60, 40), "pic.gif"),
    ("WEBP", "png", {"width": 30, "height": 30}, (30, 20), "pic.png"),
    ("WEBP", "png", {"height": 160}, (240, 160), "pic.png"),
    ("GIF", "jpeg", {"outputFileName": "thumb.jpeg", "width": 12}, (12, 8), "thumb.jpeg"),
    ("JPEG", "jpeg", {"width": 240, "quality": 95}, (240, 160), "pic.jpg"),
])
def test_images_are_converted_and_resized(api, redis, worker, source, target, resize, expected_size, expected_name):
    file_id = stored_file(api, image_bytes(source), f"pic.{source.lower()}", MIME[source])
    task = convert(api, redis, {"fileId": file_id, "targetFormat": target, **resize})
    image, meta = result_image(api, task)
    assert image.format == {"jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "png": "PNG"}[target]
    assert image.size == expected_size and meta["name"] == expected_name
    r, g, b = image.convert("RGB").getpixel((image.width // 2, 1))[:3]
    assert abs(r - 200) < 40 and g < 80 and b < 100  # the colour survived


def test_an_rgba_png_becomes_a_jpeg_on_white(api, redis, worker):
    image = Image.new("RGBA", (40, 40), (0, 0, 255, 255))
    for x in range(20):
        for y in range(40):
            image.putpixel((x, y), (0, 0, 0, 0))  # left half fully transparent
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    file_id = stored_file(api, buffer.getvalue(), "alpha.png", "image/png")
    result, _ = result_image(api, convert(api, redis, {"fileId": file_id, "targetFormat": "jpeg"}))
    assert result.format == "JPEG" and result.mode == "RGB" and result.size == (40, 40)
    assert min(result.getpixel((5, 20))) > 240  # transparent → white
    red, green, blue = result.getpixel((35, 20))
    assert blue > 200 and red < 40 and green < 40


def test_an_animated_gif_gives_its_first_frame(api, redis, worker):
    frames = [Image.new("RGB", (20, 10), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    file_id = stored_file(api, buffer.getvalue(), "anim.gif", "image/gif")
    result, _ = result_image(api, convert(api, redis, {"fileId": file_id, "targetFormat": "png"}))
    assert result.size == (20, 10) and getattr(result, "n_frames", 1) == 1
    assert result.convert("RGB").getpixel((5, 5)) == (255, 0, 0)


def test_a_damaged_image_fails_clearly(api, redis, worker):
    file_id = stored_file(api, b"\x89PNG\r\n\x1a\n" + random_bytes(2000), "broken.png", "image/png")
    task = convert(api, redis, {"fileId": file_id, "targetFormat": "jpeg"})
    assert task["status"] == "Failed" and "could not be converted" in task["errorMessage"], task


@pytest.mark.parametrize("side, parameters", [
    (10_000, {}),          # 100 M pixels: over our limit, under Pillow's own refusal
    (20_000, {}),          # 400 M pixels: Pillow refuses to open it at all
    (100, {"width": 16384, "height": 16384}),  # a small image asked to become 268 M pixels
], ids=["over-limit", "far-over-limit", "result-over-limit"])
def test_a_decompression_bomb_fails_before_decoding(api, redis, worker, side, parameters):
    """A PNG of side × side pixels in a few kilobytes (one colour compresses to nothing)."""
    bomb = Image.new("1", (side, side))
    buffer = io.BytesIO()
    bomb.save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 200_000
    file_id = stored_file(api, buffer.getvalue(), "bomb.png", "image/png")
    task = convert(api, redis, {"fileId": file_id, "targetFormat": "jpeg", **parameters})
    assert task["status"] == "Failed" and "more than the limit of 89478485 pixels" in task["errorMessage"], task


def test_unsupported_conversions_are_refused_at_creation(api, make_api, worker):
    text = stored_file(api, b"hello", "notes.txt", "text/plain")
    bmp_buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp_buffer, format="BMP")
    bmp = stored_file(api, bmp_buffer.getvalue(), "old.bmp", "image/bmp")
    png = stored_file(api, image_bytes("PNG"), "p.png", "image/png")
    theirs = stored_file(make_api(), image_bytes("PNG"), "t.png", "image/png")
    cases = [
        ({"fileId": text, "targetFormat": "png"}, 400, "UNSUPPORTED_CONVERSION"),
        ({"fileId": bmp, "targetFormat": "png"}, 400, "UNSUPPORTED_CONVERSION"),
        ({"fileId": png, "targetFormat": "tiff"}, 400, "VALIDATION_ERROR"),
        ({"fileId": png, "targetFormat": "png", "quality": 50}, 400, "VALIDATION_ERROR"),
        ({"fileId": png, "targetFormat": "jpeg", "quality": 0}, 400, "VALIDATION_ERROR"),
        ({"fileId": png, "targetFormat": "jpeg", "width": 0}, 400, "VALIDATION_ERROR"),
        ({"fileId": png, "targetFormat": "jpeg", "outputFileName": "a/b.jpg"}, 400, "VALIDATION_ERROR"),
        ({"fileId": png}, 400, "VALIDATION_ERROR"),
        ({"fileId": theirs, "targetFormat": "jpeg"}, 404, "FILE_NOT_FOUND"),
    ]
    for parameters, status, code in cases:
        body = assert_error(api.post("/tasks", json={"type": "FileConversion", "parameters": parameters}),
                            status, code)
        if code == "UNSUPPORTED_CONVERSION":
            assert body["details"]["targetFormat"] == parameters["targetFormat"]
    assert generic_task_count(api) == 0
