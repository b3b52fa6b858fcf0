FROM python:3.12-slim

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY scheduler ./scheduler
COPY tasks ./tasks
COPY examples ./examples
RUN pip install --no-cache-dir '.[postgres,flower]'

RUN useradd --create-home postsched
USER postsched
ENV POSTSCHED_DATA_DIR=/home/postsched/data

CMD ["celery", "-A", "tasks", "worker", "--loglevel=INFO"]
