# syntax=docker/dockerfile:1
# One image for every process kind: the command picks it (`runtime web|worker|scheduler|dashboard`).
#   docker build -t first-sip .
#   docker run -p 8000:8000 -e REDIS_URL=... -e DATABASE_URL=... first-sip              # web
#   docker run -e REDIS_URL=... -e DATABASE_URL=... first-sip worker

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the runtime and its dependencies, installed into a virtualenv -----------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY runtime/ runtime/
COPY emulator/ emulator/
# A regular (non-editable) install with no extras, pinned by constraints.txt: exactly what CI installs
# into a fresh venv and runs (tests/install). Every dependency ships a binary wheel for CPython 3.11.
RUN pip install -c constraints.txt .

# ---- final: the virtualenv and the app, run as a non-root user ------------------------------------------
FROM ${PYTHON_IMAGE} AS final

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it (runtime/deploy/ uses the same id).
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin app

COPY --from=build /opt/venv /opt/venv

# The app: its manifest and the functions it names. Owned by root and read-only for the app user.
WORKDIR /app
COPY manifest.yaml ./
COPY functions/ functions/
# Bytecode now, since the container's filesystem is read-only at run time.
RUN python -m compileall -q functions

USER 10001:10001

# web, worker/scheduler health, dashboard
EXPOSE 8000 8001 8081

# No HEALTHCHECK here: each process kind serves health on its own port (web 8000, worker and
# scheduler 8001, dashboard 8081); docker-compose.yml and the Kubernetes probes check each one.
ENTRYPOINT ["runtime"]
CMD ["web", "--host", "0.0.0.0"]
