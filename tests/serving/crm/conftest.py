import pytest

from tests.serving.crm.helpers import CRM_PERMS, churn_promote, churn_version_register, crm_user, customers_make


@pytest.fixture
def churn(scientist, approver, django_capture_on_commit_callbacks):
    """`churn` v1 (a small forest on customer_churn) in Production, the change signal sent."""
    with django_capture_on_commit_callbacks(execute=True):
        return churn_promote(churn_version_register(by=scientist), scientist=scientist, approver=approver)


@pytest.fixture
def operator(django_user_model):
    """A user holding every CRM permission (the integrator gives them to roles)."""
    return crm_user(django_user_model, "cora", *CRM_PERMS)


@pytest.fixture
def crm_api(operator):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def customers(db):
    return customers_make(30)
