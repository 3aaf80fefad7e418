"""Which model drives segments and how a prediction becomes one: validated against the model's classes
when saved, audited, and used by the next update."""

import numpy as np
import pytest

from core.errors import Unprocessable
from governance.models import AuditEntry
from serving.crm.mapping import mapping_parse
from serving.crm.models import CHURN_MAPPING, Customer
from tests.serving.crm.helpers import ROW, crm_user

CLASSES = ["no", "yes"]


def test_the_churn_mapping_bands_the_probability_of_churning():
    mapping = mapping_parse(CHURN_MAPPING, classes=CLASSES, model_name="churn")
    assert mapping.segment_of("yes", {"no": 0.2, "yes": 0.8}) == "at_risk"
    assert mapping.segment_of("no", {"no": 0.6, "yes": 0.4}) == "watch"
    assert mapping.segment_of("no", {"no": 0.9, "yes": 0.1}) == "loyal"
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4], [0.9, 0.1], [0.4, 0.6]])
    assert mapping.segments_of(["yes", "no", "no", "yes"], probabilities, CLASSES) == [
        "at_risk",
        "watch",
        "loyal",
        "at_risk",
    ]


def test_a_mapping_by_predicted_class_covers_every_class():
    mapping = mapping_parse(
        {"rules": [{"segment": "stay", "class": "no"}, {"segment": "go", "class": "yes"}]},
        classes=CLASSES,
        model_name="churn",
    )
    assert mapping.segments_of(["yes", "no"], np.array([[0.1, 0.9], [0.9, 0.1]]), CLASSES) == ["go", "stay"]


BAD_MAPPINGS = [
    ({"rules": [{"segment": "x", "class": "maybe"}, {"segment": "y"}]}, "mapping.rules[0].class", "no class 'maybe'"),
    ({"rules": [{"segment": "stay", "class": "no"}]}, "mapping.rules", "a prediction of 'yes' would get no segment"),
    ({"rules": [{"segment": "all"}, {"segment": "never", "class": "yes"}]}, "mapping.rules[1]", "can never match"),
    ({"rules": [{"segment": "x", "min_probability": 0.5}]}, "mapping.rules[0].min_probability", "needs a class"),
    ({"rules": [{"segment": "x", "class": "yes", "min_probability": 2}]}, "mapping.rules[0].min_probability", "0 to 1"),
    ({"rules": [{"segment": "has space"}]}, "mapping.rules[0].segment", "letters, digits"),
    ({"rules": [{"segment": "x", "colour": "red"}]}, "mapping.rules[0].colour", "unknown key"),
    ({"rules": []}, "mapping.rules", "at least one rule"),
    ([1, 2], "mapping", "must be"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "field", "message"), BAD_MAPPINGS)
def test_a_bad_mapping_is_refused_naming_the_rule(raw, field, message):
    with pytest.raises(Unprocessable) as refused:
        mapping_parse(raw, classes=CLASSES, model_name="churn")
    assert refused.value.field == field
    assert message in refused.value.message


@pytest.mark.django_db
def test_settings_are_changed_through_the_api_validated_and_audited(churn, crm_api):
    assert crm_api.get("/api/v1/crm/settings").json()["mapping"] == CHURN_MAPPING
    bad = crm_api.put(
        "/api/v1/crm/settings", {"mapping": {"rules": [{"segment": "x", "class": "perhaps"}]}}, format="json"
    )
    assert bad.status_code == 422
    assert bad.json() == {
        "error": "churn has no class 'perhaps' (its classes: no, yes)",
        "field": "mapping.rules[0].class",
    }
    unknown = crm_api.put("/api/v1/crm/settings", {"model_name": "no-such-model"}, format="json")
    assert (unknown.status_code, unknown.json()["field"]) == (422, "model_name")
    by_class = {"rules": [{"segment": "stay", "class": "no"}, {"segment": "go", "class": "yes"}]}
    ok = crm_api.put("/api/v1/crm/settings", {"mapping": by_class, "reason": "simpler"}, format="json")
    assert ok.status_code == 200, ok.json()
    assert (ok.json()["mapping"], ok.json()["updated_by"]) == (by_class, "cora")
    entry = AuditEntry.objects.get(action="crm.settings_updated")
    assert (entry.before["mapping"], entry.after["mapping"], entry.reason) == (CHURN_MAPPING, by_class, "simpler")
    Customer.objects.create(customer_id="CUST_TEST_007", features=dict(ROW))
    assert crm_api.post("/crm_segment_update?customer_id=CUST_TEST_007").json()["segment_after"] == "go"


@pytest.mark.django_db
def test_changing_settings_needs_its_permission(churn, client, django_user_model):
    client.force_login(crm_user(django_user_model, "viewer", "view_crmsettings"))
    assert client.get("/api/v1/crm/settings").status_code == 200
    response = client.put("/api/v1/crm/settings", {"model_name": "churn"}, content_type="application/json")
    assert response.status_code == 403
    assert "change_crmsettings" in response.json()["error"]


@pytest.mark.django_db
def test_the_embedded_crm_is_seeded_once_from_the_churn_generator(django_user_model):
    from serving.crm.services import customers_seed

    admin = django_user_model.objects.create_superuser("root", password="pw-root-1")
    assert customers_seed(count=40, by=admin) == 40
    customer = Customer.objects.get(customer_id="CUST_TEST_007")
    assert set(customer.features) == set(ROW)
    assert Customer.objects.filter(customer_id="CUST_0000040").exists()
    assert customers_seed(count=40, by=admin) == 0  # make run again: nothing added
    assert Customer.objects.count() == 40
    assert AuditEntry.objects.filter(action="crm.customers_seeded").count() == 1
