from django.urls import path

from tests.adapter.django_app import views

urlpatterns = [
    path("login/", views.login),
    path("whoami/", views.whoami),
    path("incr/", views.incr),
    path("put/", views.put),
    path("logout/", views.logout),
    path("signin/", views.signin),
    path("logout-everywhere/", views.logout_everywhere),
    path("cache/incr/", views.cache_incr),
]
