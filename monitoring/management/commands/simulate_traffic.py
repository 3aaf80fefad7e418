"""manage.py simulate_traffic MODEL: send rows of the model's training data, shifted if asked, through the
real prediction API (HTTP), and optionally their true labels as feedback; then watch monitoring react.

    manage.py simulate_traffic churn --shift monthly_charges=+30 --rows 2000
    manage.py simulate_traffic churn --shift age=*1.5 --shift contract_type==two_year --feedback 0.3
"""

import json
import time
import urllib.error
import urllib.request

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from core.errors import ApplicationError
from experiments.services import dataset_frame_load
from monitoring.services import drift_version_default
from monitoring.windows import window_parse
from registry.models import ModelVersion


def shift_parse(text, features):
    """`name=+30`, `name=-5`, `name=*1.5` (numeric) or `name==value` (categorical: every row gets it)."""
    name, _, change = text.partition("=")
    if not name or not change:
        raise CommandError(f"--shift {text!r}: write NAME=+N, NAME=-N, NAME=*F or NAME==VALUE")
    if name not in features:
        raise CommandError(f"--shift {text!r}: the model has no feature {name!r} ({', '.join(features)})")
    if change.startswith("="):
        return name, "set", change[1:]
    if features[name] == "categorical":
        raise CommandError(f"--shift {text!r}: {name} is categorical; set a value with {name}==VALUE")
    try:
        if change.startswith("*"):
            return name, "scale", float(change[1:])
        return name, "add", float(change)
    except ValueError:
        raise CommandError(f"--shift {text!r}: {change!r} is not a number") from None


class Command(BaseCommand):
    help = "Send rows of a model's training data (shifted with --shift) through the prediction API, over HTTP."

    def add_arguments(self, parser):
        parser.add_argument("model")
        parser.add_argument("--rows", type=int, default=1000)
        parser.add_argument("--shift", action="append", default=[], help="NAME=+N, NAME=-N, NAME=*F or NAME==VALUE")
        parser.add_argument("--batch", type=int, default=20, help="rows per request")
        parser.add_argument("--feedback", type=float, default=0.0, help="share of rows whose true label is sent back")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="where the platform answers")
        parser.add_argument("--user", default=settings.DEMO_ADMIN_USERNAME, help="whose API token to use")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **options):
        if options["rows"] < 1 or options["batch"] < 1 or not 0 <= options["feedback"] <= 1:
            raise CommandError("--rows and --batch must be at least 1, --feedback between 0 and 1")
        try:
            number = drift_version_default(model_name=options["model"], window=window_parse("1h"))
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None
        version = ModelVersion.objects.select_related("dataset").get(model__name=options["model"], version=number)
        features = {f["name"]: f["dtype"] for f in version.signature["features"]}
        shifts = [shift_parse(text, features) for text in options["shift"]]
        frame = dataset_frame_load(version=version.dataset)
        rng = np.random.default_rng(options["seed"])
        sample = frame.iloc[rng.integers(0, len(frame), options["rows"])].reset_index(drop=True)
        for name, how, amount in shifts:
            if how == "set":
                sample[name] = amount
            elif how == "scale":
                sample[name] = sample[name] * amount
            else:
                sample[name] = sample[name] + amount
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"no user {options['user']!r} (say whose token to use with --user)")
        token, _ = Token.objects.get_or_create(user=user)
        headers = {"Authorization": f"Token {token.key}", "Content-Type": "application/json"}
        base = options["url"].rstrip("/")
        target = version.signature["target"]
        records = [
            {name: (None if value != value else value) for name, value in row.items() if name in features}
            for row in sample.to_dict("records")
        ]
        sent, failed, answered = 0, 0, []
        started = time.perf_counter()
        for first in range(0, len(records), options["batch"]):
            batch = records[first : first + options["batch"]]
            status, body = self._post(f"{base}/api/v1/models/{options['model']}/predict", {"instances": batch}, headers)
            if status != 200:
                failed += len(batch)
                self.stderr.write(f"rows {first}-{first + len(batch) - 1}: {status} {body}")
                continue
            sent += len(batch)
            answered.append((first, body["request_id"], len(batch)))
        seconds = time.perf_counter() - started
        self.stdout.write(
            f"{sent} rows predicted by {options['model']} v{number} in {len(answered)} requests ({seconds:.1f} s)"
            + (f", {failed} refused" if failed else "")
            + (f"; shifted: {', '.join(options['shift'])}" if shifts else "")
        )
        if options["feedback"] and target in sample:
            self._feedback(answered, sample[target].astype(str).tolist(), options, base, headers, rng)
        if failed and not sent:
            raise CommandError("no row was predicted")

    def _post(self, url, payload, headers):
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()[:300]
        except urllib.error.URLError as exc:
            raise CommandError(f"{url}: {exc.reason} (is the platform running? `make run`)") from None

    def _feedback(self, answered, labels, options, base, headers, rng):
        """The true labels of a share of the rows, once the log has them (it is written in batches)."""
        time.sleep(max(1.0, 2 * settings.PREDICTION_LOG_FLUSH_SECONDS))
        given = 0
        for first, request_id, size in answered:
            for row in range(size):
                if rng.random() >= options["feedback"]:
                    continue
                url = f"{base}/api/v1/predictions/{request_id}/feedback"
                for _ in range(5):
                    status, _ = self._post(url, {"actual": labels[first + row], "row": row}, headers)
                    if status != 404:
                        break
                    time.sleep(0.5)  # not written to the log yet
                given += status == 200
        self.stdout.write(f"feedback sent for {given} rows")
