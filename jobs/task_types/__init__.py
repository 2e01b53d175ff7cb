"""The built-in task types of the seed, registered on the app by the factory."""
from __future__ import annotations

from app.tasks.registry import register_task_type


def register_builtin_task_types(app) -> None:
    from jobs.task_types import compress  # noqa: PLC0415
    from jobs.task_types import convert, decompress  # noqa: PLC0415

    register_task_type(app, "FileCompress", compress.CompressParameters, compress.run,
                       display_name="Compress Files", prepare=compress.prepare)

    from jobs.task_types import bulk, encrypt  # noqa: PLC0415

    register_task_type(app, "FileEncrypt", encrypt.EncryptParameters, encrypt.run_encrypt,
                       display_name="Encrypt Files", prepare=encrypt.prepare_encrypt)
    register_task_type(app, "FileDecrypt", encrypt.EncryptParameters, encrypt.run_decrypt,
                       display_name="Decrypt Files", prepare=encrypt.prepare_decrypt)
    register_task_type(app, "BulkOperation", bulk.BulkParameters, bulk.run,
                       display_name="Bulk Operation", prepare=bulk.prepare)
    register_task_type(app, "FileDecompress", decompress.DecompressParameters, decompress.run,
                       display_name="Extract Archive", prepare=decompress.prepare, discard=decompress.discard)
    register_task_type(app, "FileConversion", convert.ConvertParameters, convert.run,
                       display_name="Convert File", prepare=convert.prepare)

    from jobs.task_types import migrate, move  # noqa: PLC0415

    register_task_type(app, "FileMove", move.MoveParameters, move.run, display_name="Move Files", prepare=move.prepare)
    register_task_type(app, "StorageMigration", migrate.MigrationParameters, migrate.run,
                       display_name="Migrate Storage", prepare=migrate.prepare)
