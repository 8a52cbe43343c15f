"""A FileStorage that prints when it closes: shows where a server's own output goes."""

from durus.file_storage import FileStorage


class NoisyStorage(FileStorage):
    def close(self):
        print("NoisyStorage closed", flush=True)
        super().close()
