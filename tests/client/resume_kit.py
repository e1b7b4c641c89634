"""Pieces the resume tests share (tests/client/test_resume.py, tests/deploy/test_replica_faults.py):
a TCP proxy whose connections the test can cut (a broken stream while the server lives), and
the C++ client's resume driver (tests/client/resume_driver.cc) as a child process fed command
by command."""

import os
import socket
import subprocess
import threading

import numpy as np

import rnnserve_testkit as kit


class CutProxy:
    """Forwards 127.0.0.1:<port> to `backend` ("host:port"); cut() drops every connection open
    now (the client's channel reconnects through the proxy on its next call)."""

    def __init__(self, backend):
        host, port = backend.rsplit(":", 1)
        self._backend = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sockets = []
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._backend, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Drops every open connection (both sides)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.cuts += 1

    def close(self):
        self._listener.close()
        self.cut()


def driver_binary():
    path = os.environ.get("RNNSERVE_RESUME_DRIVER", "")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"$RNNSERVE_RESUME_DRIVER={path!r} is not an executable (ctest "
                             "sets it)")
    return path


class CppSession:
    """One session streamed by the C++ library (resume_driver) from chunk files in `folder`."""

    def __init__(self, target, model, session_id, folder, chunks, flags=()):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        for i, chunk in enumerate(chunks):
            np.save(os.path.join(folder, f"chunk_{i}.npy"), np.asarray(chunk, np.float32))
        self.process = subprocess.Popen(
            [driver_binary(), target, model, session_id, folder] + list(flags),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def command(self, line, timeout=60.0):
        """Sends one command; returns (answered, steps_seen, resumes). AssertionError on an
        error line."""
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = [None]

        def read():
            reply[0] = self.process.stdout.readline()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(kit.scaled(timeout))
        if reader.is_alive() or not reply[0]:
            self.process.kill()
            raise AssertionError(f"resume_driver gave no answer to {line!r}: "
                                 f"{self.process.stderr.read()[-2000:]}")
        words = reply[0].split()
        if words[0] != "ok":
            raise AssertionError(f"resume_driver: {line!r} -> {reply[0].strip()}")
        return int(words[1]), int(words[2]), int(words[3])

    def outputs(self, count):
        return [np.load(os.path.join(self.folder, f"out_{i}.npy")) for i in range(count)]

    def h_n(self):
        return np.load(os.path.join(self.folder, "h_n.npy"))

    def finish(self, timeout=30.0):
        """Closes stdin; returns the driver's last line ("finish <status>")."""
        out, err = self.process.communicate(timeout=kit.scaled(timeout))
        self.assert_exit(err)
        return out.strip().splitlines()[-1]

    def assert_exit(self, err):
        if self.process.returncode != 0:
            raise AssertionError(f"resume_driver exited {self.process.returncode}: {err[-2000:]}")
