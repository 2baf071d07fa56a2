# recsys: one image for the API (default command) and every other CLI command.
#
#   docker build -t recsys .
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/build/demo/artifact:/artifact:ro" \
#       -v recsys-state:/state recsys
#   docker run --rm -v "$PWD/build/demo/artifact:/artifact:ro" -v recsys-out:/output recsys \
#       recommend --artifact /artifact --all-users --k 10 --out /output/recommendations.parquet
#
# Build args:
#   BASE                 any Debian-like image with Python >= 3.11 and venv (default python:3.12-slim)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT
#                        pip's own settings; the default extra index is PyTorch's CPU wheels, so
#                        torch comes without CUDA. Where only PyPI is reachable, mount a directory
#                        holding torch's CPU wheel at build time and point PIP_FIND_LINKS at it
#                        (podman build -v /opt/wheels:/wheels:ro --build-arg PIP_FIND_LINKS=/wheels
#                        --build-arg PIP_EXTRA_INDEX_URL=).
#   STRIP                1 (default): strip the symbol tables of torch's and pyarrow's own shared
#                        libraries (about 130 MB less); binutils is installed in the build stage
#                        with apt-get when missing, and stripping is skipped when that is
#                        impossible. 0: keep them. Libraries that auditwheel patched (numpy.libs,
#                        scipy.libs, ...) are never stripped: strip breaks their load segments.
ARG BASE=python:3.12-slim

# The dependency list alone, so that editing other parts of pyproject.toml (tool settings)
# keeps the cached layer that installs the dependencies.
FROM ${BASE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' > /requirements.txt

# ---------------------------------------------------------------------------------- build stage
FROM ${BASE} AS build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
ARG PIP_CERT
ARG STRIP=1
# pip reads the build args above from the environment, where an empty one would count as a
# value: every RUN that calls pip first unsets the empty ones.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

# Dependencies first, in their own layer: a change to recsys's code does not reinstall torch.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN set -eu; for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT; do \
        eval "test -n \"\${$v:-}\" || unset $v"; done; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --no-compile --prefer-binary -r /tmp/requirements.txt

COPY pyproject.toml README.md /src/
COPY recsys /src/recsys
RUN set -eu; for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT; do \
        eval "test -n \"\${$v:-}\" || unset $v"; done; \
    /opt/venv/bin/pip install --no-cache-dir --no-compile --no-deps /src; \
    /opt/venv/bin/pip uninstall --yes --quiet pip setuptools wheel || true; \
    rm -rf /src/build

# Slim the environment: test suites, C/C++ headers, Cython sources, torch's C++ test binaries
# and the Arrow Flight RPC library (pyarrow.flight; nothing in recsys uses it).
RUN set -eu; SP=$(echo /opt/venv/lib/python3*/site-packages); \
    find "$SP" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +; \
    find "$SP" -depth -type d \( -name include -o -name __pycache__ \) -exec rm -rf {} +; \
    find "$SP" -type f \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.c' -o -name '*.cpp' -o -name '*.h' \) -delete; \
    find "$SP/torch/bin" -type f ! -name torch_shm_manager -delete 2>/dev/null || true; \
    rm -rf "$SP"/torch/share/cmake "$SP"/pyarrow/libarrow_flight.so* "$SP"/pyarrow/_flight.*.so

# Symbol tables of torch's and pyarrow's own libraries (see STRIP above).
RUN set -eu; \
    if [ "$STRIP" = 1 ] && ! command -v strip >/dev/null && command -v apt-get >/dev/null; then \
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null) \
            || echo "binutils could not be installed: shared libraries stay unstripped"; \
    fi; \
    if [ "$STRIP" = 1 ] && command -v strip >/dev/null; then \
        for f in /opt/venv/lib/python3*/site-packages/torch/lib/*.so* \
                 /opt/venv/lib/python3*/site-packages/pyarrow/*.so*; do \
            if readelf -S "$f" 2>/dev/null | grep -q '\.symtab'; then strip --strip-unneeded "$f"; fi; \
        done; \
    fi

# Byte-code for what the commands import (and all of recsys), so that the read-only environment
# starts fast; imports fail the build here, after stripping, rather than in a running container.
# unchecked-hash: the .pyc files stay valid whatever timestamps the COPY below gives the sources.
RUN set -eu; printf '%s\n' \
    'import importlib, pkgutil, py_compile, sys' \
    'import recsys' \
    'required = ["numpy", "scipy.sparse", "pandas", "pyarrow.parquet", "sklearn.ensemble", "torch", "torch.nn", "torch.optim", "safetensors.torch", "faiss", "implicit.als", "implicit.bpr", "gensim.models.doc2vec", "fastapi", "uvicorn", "recsys.cli", "recsys.pipeline", "recsys.serving.app", "recsys.serving.cli"]' \
    'optional = ["pyarrow.dataset", "sklearn.linear_model", "sklearn.ensemble._hist_gradient_boosting.predictor", "torch.nn.functional", "uvicorn.loops.asyncio", "uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on"]' \
    'optional += [m.name for m in pkgutil.walk_packages(recsys.__path__, "recsys.", onerror=print) if not m.name.endswith("__main__")]' \
    'for name in required: importlib.import_module(name)' \
    'for name in optional:' \
    '    try: importlib.import_module(name)' \
    '    except Exception: pass' \
    'mode = py_compile.PycInvalidationMode.UNCHECKED_HASH' \
    'for module in list(sys.modules.values()):' \
    '    path = getattr(module, "__file__", None) or ""' \
    '    if path.endswith(".py") and path.startswith(sys.prefix):' \
    '        py_compile.compile(path, invalidation_mode=mode)' \
    > /tmp/warm.py; \
    /opt/venv/bin/python /tmp/warm.py; \
    /opt/venv/bin/python -m compileall -q --invalidation-mode unchecked-hash /opt/venv/lib/python3*/site-packages/recsys

# ---------------------------------------------------------------------------------- final stage
FROM ${BASE}
LABEL org.opencontainers.image.title="recsys" \
      org.opencontainers.image.description="recsys recommender: API server (default) and CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid/gid (10001) that owns only the writable places.
RUN set -eu; \
    echo 'recsys:x:10001:' >> /etc/group; \
    echo 'recsys:x:10001:10001:recsys:/home/recsys:/usr/sbin/nologin' >> /etc/passwd; \
    mkdir -p /artifact /state /output /home/recsys; \
    chown 10001:10001 /state /output /home/recsys
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/recsys \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=8000 \
    RECSYS_EVENTS_LOG=/state/events.jsonl
USER 10001:10001
WORKDIR /home/recsys
VOLUME ["/state"]
EXPOSE 8000
# Follows RECSYS_PORT (and RECSYS_HOST when it names one address rather than all of them).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; h = os.environ.get('RECSYS_HOST') or '0.0.0.0'; h = '127.0.0.1' if h in ('0.0.0.0', '::') else h; h = f'[{h}]' if ':' in h else h; u.urlopen(f\"http://{h}:{os.environ.get('RECSYS_PORT') or '8000'}/healthz\", timeout=4)"]
ENTRYPOINT ["recsys"]
CMD ["serve", "--artifact", "/artifact"]
