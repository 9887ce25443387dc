"""
The spatial navigation task of the NMDA paper (after TEM-t, Whittington et al. 2022).

An L x L grid; every node carries one of n_obs sensory tokens, drawn uniformly and independently.
One such assignment is a map. N familiar maps are drawn once from the seed and kept for the whole
run (reference memory can learn them); novel maps are drawn fresh for every walk from the walk's
random stream and never trained on.

A random walk moves at every step to a node drawn uniformly from {stay} + grid neighbours, so a
corner stays with probability 1/3, an edge node 1/4, an interior node 1/5. With n_actions = 4
there is no "stay" and the move is uniform over the neighbours.

Node index = row * size + column; row 0 is the top (north) row.
"""

import torch

# (d_row, d_col) of each action. With 5 actions: 0 stay, 1 east, 2 south, 3 north, 4 west.
MOVES = ((0, 0), (0, 1), (1, 0), (-1, 0), (0, -1))
ACTION_NAMES = ("stay", "east", "south", "north", "west")


class GridWorld:
    def __init__(self, size=11, n_obs=10, num_maps=32, n_actions=5, seed=0, device="cpu"):
        if size < 2:
            raise ValueError(f"size must be >= 2, got {size}")
        if n_obs < 2:
            raise ValueError(f"n_obs must be >= 2, got {n_obs}")
        if num_maps < 1:
            raise ValueError(f"num_maps must be >= 1, got {num_maps}")
        if n_actions not in (4, 5):
            raise ValueError(f"n_actions must be 4 or 5, got {n_actions}")
        self.size, self.n_obs, self.num_maps, self.n_actions = size, n_obs, num_maps, n_actions
        self.n_nodes = size * size
        self.device = torch.device(device)
        self.action_names = ACTION_NAMES[5 - n_actions:]
        self.moves = MOVES[5 - n_actions:]  # (d_row, d_col) of each action index

        # The familiar maps: a pure function of the seed, so a checkpoint's args rebuild them.
        g = torch.Generator().manual_seed(seed)
        self.maps = torch.randint(n_obs, (num_maps, self.n_nodes), generator=g).to(self.device)

        # next_node[node, action] = the node the action leads to, or -1 where it leaves the grid.
        row, col = torch.arange(self.n_nodes) // size, torch.arange(self.n_nodes) % size
        nxt = []
        for dr, dc in self.moves:
            r, c = row + dr, col + dc
            inside = (r >= 0) & (r < size) & (c >= 0) & (c < size)
            nxt.append(torch.where(inside, r * size + c, -1))
        self.next_node = torch.stack(nxt, 1).to(self.device)  # (n_nodes, n_actions)

        # The default stream of walks (training); pass your own generator for anything else.
        self.generator = torch.Generator(self.device).manual_seed(seed + 1)

    def walk(self, batch, steps, novel=False, map_id=None, generator=None):
        """Random walks of `steps` moves, all batch elements at once.

        Returns obs (B, steps+1), act (B, steps), pos (B, steps+1), map_id (B,) with obs[:, t]
        the token at pos[:, t] and act[:, t] the move from pos[:, t] to pos[:, t+1].
        For novel walks every walk gets its own fresh map and map_id is -1.
        map_id (an int or a (B,) tensor) fixes the familiar map of every walk."""
        g = self.generator if generator is None else generator
        dev = self.device
        if novel:
            maps = torch.randint(self.n_obs, (batch, self.n_nodes), generator=g, device=dev)
            map_id = torch.full((batch,), -1, device=dev)
        else:
            if map_id is None:
                map_id = torch.randint(self.num_maps, (batch,), generator=g, device=dev)
            map_id = torch.as_tensor(map_id, device=dev).expand(batch).clone()
            maps = self.maps[map_id]  # (B, n_nodes)
        pos = torch.empty(batch, steps + 1, dtype=torch.long, device=dev)
        pos[:, 0] = torch.randint(self.n_nodes, (batch,), generator=g, device=dev)
        # The arg-max of i.i.d. uniforms over the legal moves is a uniform draw among them.
        u = torch.rand(batch, steps, self.n_actions, generator=g, device=dev)
        act = torch.empty(batch, steps, dtype=torch.long, device=dev)
        for t in range(steps):  # a loop over time, never over the batch
            options = self.next_node[pos[:, t]]  # (B, n_actions)
            act[:, t] = u[:, t].masked_fill(options < 0, -1.0).argmax(-1)
            pos[:, t + 1] = options.gather(1, act[:, t, None]).squeeze(1)
        obs = maps.gather(1, pos)  # (B, steps+1)
        return obs, act, pos, map_id


def window(steps, context):
    """(steps,) the first observation in a context of `context` observations ending at step t: t-context+1."""
    return (torch.arange(steps) - context + 1).clamp(min=0)


def visited_since(pos, first):
    """(B, steps) bool: True where pos[:, t+1] is among pos[:, first[t] : t+1], first (steps,) a tensor.

    These are the working-memory (WM) steps: the answer is among the observations the prediction can
    see. The others are reference-memory (RM) steps: only what the weights learned about the map can
    answer them."""
    target = pos[:, 1:]  # (B, steps)
    T = target.shape[1]
    back = torch.arange(T) - first.cpu()  # how far back step t sees
    seen = torch.zeros_like(target, dtype=torch.bool)
    for lag in range(int(back.max()) + 1 if T else 0):
        # compare pos[:, t+1] with pos[:, t-lag] wherever t-lag >= first[t]
        seen[:, lag:] |= (target[:, lag:] == pos[:, : T - lag]) & (back[lag:] >= lag).to(pos.device)
    return seen


def visited_in_context(pos, context):
    """visited_since with a context of the last `context` observations."""
    return visited_since(pos, window(pos.shape[1] - 1, context))


def memory_counts(wrong, pos, first, scored=None):
    """Per walk, (B, 4): [wrong on WM steps, WM steps, wrong on RM steps, RM steps], from
    wrong (B, steps), True where a prediction of pos[:, t+1]'s observation was wrong; first as in
    visited_since; scored (steps,) bool: the steps counted (None: all)."""
    wm = visited_since(pos, first)
    rm = ~wm
    if scored is not None:
        wm, rm = wm & scored.to(pos.device), rm & scored.to(pos.device)
    return torch.stack([(wrong & wm).sum(1), wm.sum(1), (wrong & rm).sum(1), rm.sum(1)], 1)


class Batches:
    """Training batches: (obs, act, g0) of `batch` walks of `steps` moves, drawn `ahead` batches at
    a time, in one pass of env.walk's time loop (on a GPU it costs as much for 64 walks as for
    4,096). g0 comes from draw_g0(n, generator=...) (Model.random_g0). With data-parallel processes
    every process draws the same batches and keeps its slice `part`, so a run sees the same walks
    however many processes share it (without dropout, the same numbers too). state() and load_state()
    let a checkpoint resume the exact stream."""

    def __init__(self, env, batch, steps, draw_g0, ahead=16, part=slice(None)):
        self.env, self.batch, self.steps, self.draw_g0 = env, batch, steps, draw_g0
        self.ahead, self.part = ahead, part
        self.draw()

    def draw(self):
        self.start = self.env.generator.get_state()  # replaying from here redraws the same walks
        n = self.ahead * self.batch
        obs, act, _, _ = self.env.walk(n, self.steps)
        g0 = self.draw_g0(n, generator=self.env.generator, device=self.env.device)
        self.buffer = [z.view(self.ahead, self.batch, *z.shape[1:]) for z in (obs, act, g0)]
        self.used = 0

    def next(self):
        if self.used == self.ahead:
            self.draw()
        batch = tuple(z[self.used, self.part] for z in self.buffer)
        self.used += 1
        return batch

    def state(self):
        return {"start": self.start, "used": self.used}

    def load_state(self, state):
        self.env.generator.set_state(state["start"])
        self.draw()
        self.used = state["used"]
