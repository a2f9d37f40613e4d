# syntax=docker/dockerfile:1.7
#
# Image of the Django example site (example/) with the trigger-relay add-on
# (django-trigger-relay/), for deploy/compose.yaml only: local use, runserver, no static
# files pipeline. Build context: the repository root.
#
# Note: written on a machine without a Docker engine; this file has not been built there.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
# Repository folders of the add-on (an installable Python project, at the top level) and of
# the example site (holding manage.py).
ARG ADDON_DIR=django-trigger-relay
ARG SITE_DIR=example
# What the example site needs beyond the add-on (and dj-triggers, Django, Celery, which it
# pulls in): the PostgreSQL driver and Celery's Redis transport. kombu imports `packaging`
# without declaring it. A requirements.txt in SITE_DIR, if present, is installed as well.
ARG SITE_PACKAGES="psycopg[binary]>=3.1 celery[redis]>=5.4 packaging"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The add-on's trigger_relay/sql is a symlink to the repository's sql/ (one canonical
# schema for the add-on and the daemon): keep both at their relative places.
COPY sql /src/sql
COPY ${ADDON_DIR} /src/${ADDON_DIR}
# SITE_PACKAGES is a list of requirement specifiers: word splitting is intended. Lower
# bounds only: this is a local demo image; a production site image pins its own versions.
# hadolint ignore=SC2086,DL3013
RUN pip install "/src/${ADDON_DIR}" ${SITE_PACKAGES}

COPY ${SITE_DIR} /app
RUN if [ -f /app/requirements.txt ]; then pip install -r /app/requirements.txt; fi \
 && groupadd --system --gid 10001 site \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app site

WORKDIR /app
USER 10001:10001
EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000"]
