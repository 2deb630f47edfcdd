"""The authority a client process registered with: captured once by the supervisor
(lsca.supervisor.admission), carried to its worker, never widened (lsca.workers.creds)."""


class Identity:
    """The authority captured at registration: uid, gid and supplementary groups."""

    __slots__ = ("uid", "gid", "groups")

    def __init__(self, uid, gid, groups):
        self.uid = uid
        self.gid = gid
        self.groups = tuple(sorted(groups))

    @property
    def root(self):
        return self.uid == 0

    def to_json(self):
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups)}

    @classmethod
    def from_json(cls, value):
        return cls(int(value["uid"]), int(value["gid"]), [int(g) for g in value["groups"]])
