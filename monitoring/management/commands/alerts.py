"""manage.py alerts: list alerts, acknowledge and silence them, evaluate the rules now, and retrainings.

manage.py alerts list [--state pending|firing|resolved] [--model MODEL] [--json]
manage.py alerts ack ID --user USER [--note TEXT]
manage.py alerts silence ID (--until ISO | --for 4h) --reason TEXT --user USER
manage.py alerts evaluate [--model MODEL]        # what the beat does after each monitoring run, now
manage.py alerts retrainings [--model MODEL] [--advance]
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from core.cli import add_user_argument, user_resolve
from core.errors import ApplicationError
from monitoring import selectors, services
from monitoring.models import Alert, Retraining
from monitoring.windows import moment_parse, window_parse


class Command(BaseCommand):
    help = "List, acknowledge and silence alerts; evaluate the alert rules now; show and advance retrainings."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="alerts, newest first")
        listing.add_argument("--state", choices=Alert.State.values, help="default: every state")
        listing.add_argument("--model")
        listing.add_argument("--json", action="store_true")
        ack = actions.add_parser("ack", help="acknowledge an open alert (no more reminders)")
        ack.add_argument("alert_id", type=int)
        ack.add_argument("--note", default="")
        add_user_argument(ack, required=True)
        silence = actions.add_parser("silence", help="no notification about an alert until a time")
        silence.add_argument("alert_id", type=int)
        group = silence.add_mutually_exclusive_group(required=True)
        group.add_argument("--until", help="ISO 8601 moment")
        group.add_argument("--for", dest="duration", help="a duration from now: 30m, 4h, 2d")
        silence.add_argument("--reason", required=True)
        add_user_argument(silence, required=True)
        evaluate = actions.add_parser("evaluate", help="evaluate the rules (and retraining policies) now")
        evaluate.add_argument("--model", help="default: every monitored model")
        retrainings = actions.add_parser("retrainings", help="retrainings the policies started")
        retrainings.add_argument("--model")
        retrainings.add_argument("--advance", action="store_true", help="register finished runs, open requests")

    def handle(self, *args, **options):
        try:
            getattr(self, f"_{options['action']}")(options)
        except ApplicationError as exc:
            raise CommandError(str(exc)) from None

    def _list(self, options):
        alerts = list(selectors.alert_list(state=options["state"], model_name=options["model"])[:200])
        if options["json"]:
            self.stdout.write(json.dumps([services.alert_payload(a) for a in alerts], cls=DjangoJSONEncoder))
            return
        if not alerts:
            self.stdout.write("no alert" + (f" {options['state']}" if options["state"] else ""))
            return
        self.stdout.write(f"{'id':>5}  {'state':9} {'model':14} {'kind':17} {'since':17} summary")
        for alert in alerts:
            since = alert.resolved_at or alert.fired_at or alert.opened_at
            flags = []
            if alert.acknowledged_at:
                flags.append(f"acked by {alert.acknowledged_by}")
            if alert.silenced(timezone.now()):
                flags.append(f"silenced until {alert.silenced_until:%Y-%m-%d %H:%M}")
            self.stdout.write(
                f"{alert.pk:>5}  {alert.state:9} {alert.model.name:14} {alert.rule.kind:17} "
                f"{since:%Y-%m-%d %H:%M}  {alert.summary}" + (f" [{'; '.join(flags)}]" if flags else "")
            )

    def _ack(self, options):
        user = user_resolve(options["user"], required=True)
        alert = services.alert_acknowledge(alert_id=options["alert_id"], by=user, note=options["note"])
        self.stdout.write(self.style.SUCCESS(f"alert #{alert.pk} acknowledged by {user}"))

    def _silence(self, options):
        user = user_resolve(options["user"], required=True)
        if options["until"]:
            until = moment_parse(options["until"], field="until")
        else:
            if ".." in options["duration"]:
                raise CommandError(f"--for: give a duration such as 30m, 4h or 2d, not {options['duration']!r}")
            window = window_parse(options["duration"], field="for")
            until = timezone.now() + (window.end - window.start)
        alert = services.alert_silence(alert_id=options["alert_id"], until=until, reason=options["reason"], by=user)
        self.stdout.write(
            self.style.SUCCESS(f"alert #{alert.pk} silenced until {alert.silenced_until:%Y-%m-%d %H:%M} UTC")
        )

    def _evaluate(self, options):
        models = [options["model"]] if options["model"] else services.models_to_monitor()
        if not models:
            self.stdout.write("no model to evaluate (nothing deployed, nothing logged)")
        for model_name in models:
            for outcome in services.alerts_evaluate(model_name=model_name):
                verdict = {True: "HOLDS", False: "ok", None: "no data"}[outcome.breached]
                state = f" -> alert #{outcome.alert_id} {outcome.state}" if outcome.alert_id else ""
                sent = f" (notified: {outcome.notified})" if outcome.notified else ""
                self.stdout.write(f"{model_name}: {outcome.kind:17} {verdict:7} {outcome.summary}{state}{sent}")
            retraining = services.retraining_check(model_name=model_name)
            if retraining is not None:
                self.stdout.write(
                    self.style.WARNING(
                        f"{model_name}: started {retraining} (run {retraining.run_id}, {retraining.trigger})"
                    )
                )

    def _retrainings(self, options):
        if options["advance"]:
            services.retrainings_advance()
        retrainings = Retraining.objects.select_related("model", "base_version", "new_version").order_by("-started_at")
        if options["model"]:
            retrainings = selectors.retrainings_of(model_name=options["model"])
        for retraining in retrainings[:50]:
            self.stdout.write(
                f"#{retraining.pk} {retraining.model.name} {retraining.status:11} {retraining.trigger:8} "
                f"from {retraining.base_version} at {retraining.started_at:%Y-%m-%d %H:%M}: "
                f"{retraining.message or 'run ' + str(retraining.run_id)}"
            )
