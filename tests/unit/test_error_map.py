"""One table says what an answer's error becomes on HTTP and on TFTP (netbootd/error_map.py)."""

from netbootd.error_map import UNEXPECTED, refusal_for
from netbootd.errors import NotFound, PathRefused
from netbootd.render.node_files import NoRootPassword, NoSuchFile, RenderError
from netbootd.render.tokens import TokenRefused
from netbootd.tftp.admission import refusal_error
from netbootd.tftp.packet import ErrorCode


def test_each_error_has_one_status_and_one_tftp_code() -> None:
    rows = {
        TokenRefused("expired", "boot the node again"): (403, ErrorCode.ACCESS_VIOLATION),
        NotFound("no build named x/1"): (404, ErrorCode.FILE_NOT_FOUND),
        PathRefused("../etc/passwd"): (403, ErrorCode.ACCESS_VIOLATION),
        RenderError("template broken"): (500, ErrorCode.NOT_DEFINED),
        ValueError("a bug"): (500, ErrorCode.NOT_DEFINED),
    }
    for exc, (status, code) in rows.items():
        r = refusal_for(exc)
        assert (r.http_status, refusal_error(r.tftp).code) == (status, code), exc


def test_a_node_without_such_a_file_is_not_found_not_a_server_fault() -> None:
    # An ESXi boot.cfg asked for a Linux node: the request is wrong, the server is fine.
    r = refusal_for(NoSuchFile("db1 boots demo/2.0 in mode install: it has no esxi files"))
    assert (r.http_status, refusal_error(r.tftp).code, r.expected) == \
        (404, ErrorCode.FILE_NOT_FOUND, True)
    broken = refusal_for(RenderError("template pxelinux.cfg.j2: 'x' is undefined"))
    assert (broken.http_status, broken.expected) == (500, False)
    assert refusal_for(KeyError("x")) is UNEXPECTED


def test_a_refused_kickstart_is_not_found_with_its_reason() -> None:
    r = refusal_for(NoRootPassword("set vars.root_password_hash"))
    assert (r.http_status, refusal_error(r.tftp).code, r.expected) == \
        (404, ErrorCode.FILE_NOT_FOUND, True)
