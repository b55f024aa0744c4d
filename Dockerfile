# One image for every service; docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

RUN pip install --no-cache-dir uv \
    && useradd --create-home --uid 10001 softadastra

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY core core
COPY schema schema
COPY ingest ingest
COPY workers workers
COPY api api
COPY agent agent
RUN uv sync --locked --no-dev

USER softadastra
ENV PATH="/app/.venv/bin:$PATH"
CMD ["softadastra-cloud", "api"]
