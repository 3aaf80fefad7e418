"""What the apps' admins share."""


class ServiceWrittenAdmin:
    """For rows that only the services write (an audit trail, a log, a record a workflow moves on):
    the admin lists and shows them but never adds, edits or deletes one. Mix in before ModelAdmin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
