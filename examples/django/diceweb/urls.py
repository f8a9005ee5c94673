"""URLs: the roll page at the root."""

from django.urls import path

from diceweb import views

urlpatterns = [
    path("", views.roll, name="roll"),
]
