"""The CRM connector: the embedded CRM's customers, the segment history, refresh jobs and the settings
(one row, created here: segments from the demo model `churn`, by probability bands)."""

import django.db.models.deletion
import django.utils.timezone
import serving.crm.models
from django.conf import settings
from django.db import migrations, models


def settings_row(apps, schema_editor):
    apps.get_model("serving", "CrmSettings").objects.get_or_create(pk=1)


class Migration(migrations.Migration):

    dependencies = [
        ('serving', '0003_deployments_for_current_stages'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='CrmRefresh',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('stopping', 'Stopping'), ('stopped', 'Stopped'), ('finished', 'Finished'), ('failed', 'Failed')], db_index=True, default='queued', max_length=16)),
                ('scope', models.CharField(choices=[('all', 'every customer'), ('changed', 'customers changed since the last refresh')], default='all', max_length=16)),
                ('since', models.DateTimeField(blank=True, help_text='Changed scope: features changed at or after this.', null=True)),
                ('scope_note', models.CharField(blank=True, help_text='Why the scope is what it is.', max_length=200)),
                ('model_name', models.CharField(max_length=100)),
                ('model_version', models.PositiveIntegerField(blank=True, help_text='The primary version at the start.', null=True)),
                ('mapping', models.JSONField(default=dict, help_text='The mapping in force when the refresh started.')),
                ('cursor', models.CharField(blank=True, help_text='The last customer id done (ids are walked in order).', max_length=64)),
                ('total', models.PositiveIntegerField(blank=True, null=True)),
                ('processed', models.PositiveIntegerField(default=0)),
                ('updated', models.PositiveIntegerField(default=0)),
                ('unchanged', models.PositiveIntegerField(default=0)),
                ('failed', models.PositiveIntegerField(default=0)),
                ('failures', models.JSONField(blank=True, default=list, help_text='The first failures: customer id and reason.')),
                ('runner', models.CharField(blank=True, help_text='The attempt now running it; a new one takes over.', max_length=32)),
                ('attempts', models.PositiveIntegerField(default=0)),
                ('celery_task_id', models.CharField(blank=True, max_length=64)),
                ('actor_name', models.CharField(max_length=150)),
                ('error', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                ('started_at', models.DateTimeField(blank=True, null=True)),
                ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('started_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'segment refresh',
                'verbose_name_plural': 'segment refreshes',
                'ordering': ['-created_at', '-id'],
                'permissions': [('refresh_segments', "Can start, stop and resume a refresh of every customer's segment")],
            },
        ),
        migrations.CreateModel(
            name='CrmSettings',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('model_name', models.CharField(default='churn', max_length=100)),
                ('mapping', models.JSONField(default=serving.crm.models._churn_mapping)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('updated_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'CRM settings',
                'verbose_name_plural': 'CRM settings',
            },
        ),
        migrations.CreateModel(
            name='Customer',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('customer_id', models.CharField(max_length=64)),
                ('features', models.JSONField(help_text="Feature name → value, as the model's signature names them.")),
                ('segment', models.CharField(blank=True, max_length=64)),
                ('segment_model', models.CharField(blank=True, max_length=100)),
                ('segment_version', models.PositiveIntegerField(blank=True, null=True)),
                ('segment_set_at', models.DateTimeField(blank=True, null=True)),
                ('segment_request_id', models.CharField(blank=True, max_length=64)),
                ('segment_set_by', models.CharField(blank=True, help_text='A user, or the refresh job.', max_length=150)),
                ('features_updated_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now, help_text='When the features last changed (a refresh of changed customers reads this).')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'ordering': ['customer_id'],
                'permissions': [('update_segment', "Can update a customer's segment from a prediction")],
                'constraints': [models.UniqueConstraint(fields=('customer_id',), name='one_customer_per_id')],
            },
        ),
        migrations.CreateModel(
            name='SegmentChange',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('customer_id', models.CharField(max_length=64)),
                ('segment_before', models.CharField(blank=True, max_length=64)),
                ('segment_after', models.CharField(max_length=64)),
                ('model_name', models.CharField(max_length=100)),
                ('model_version', models.PositiveIntegerField()),
                ('deployment_mode', models.CharField(help_text='primary or canary: which deployment predicted.', max_length=16)),
                ('prediction', models.CharField(max_length=100)),
                ('confidence', models.FloatField()),
                ('request_id', models.CharField(help_text="The prediction log's request id.", max_length=64)),
                ('row', models.PositiveIntegerField(default=0, help_text='The row of that request.')),
                ('idempotency_key', models.CharField(max_length=120)),
                ('status', models.CharField(choices=[('applied', 'Applied'), ('pending', 'pending (sent again on resume)'), ('failed', 'Failed')], default='applied', max_length=16)),
                ('error', models.TextField(blank=True)),
                ('actor_name', models.CharField(max_length=150)),
                ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('actor', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('refresh', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='changes', to='serving.crmrefresh')),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'indexes': [models.Index(fields=['customer_id', '-created_at'], name='serving_seg_custome_a81e56_idx'), models.Index(fields=['request_id'], name='serving_seg_request_d571f9_idx'), models.Index(fields=['refresh', 'status'], name='serving_seg_refresh_10ef3d_idx')],
            },
        ),
        migrations.RunPython(settings_row, migrations.RunPython.noop),
    ]
