// A small C ABI over Box2D 2.4 so that .NET can drive it with P/Invoke. It is deliberately generic
// (worlds, bodies, fixtures, a revolute joint, impulses, state read-back, contact flags): every
// environment rule lives in C#. Bodies are addressed by small integer ids inside their world, so no
// Box2D pointer ever crosses the boundary except the opaque world handle. No C++ exception may leave
// an extern "C" function: the few allocating entry points catch everything and report -1 / null.
#include <box2d/box2d.h>
#include <cstdint>
#include <vector>

namespace {

struct BodyInfo {
    b2Body* body;
    int touching;     // set by BeginContact, cleared by EndContact: a flag, not a count (kept on purpose)
    int beginCount;   // BeginContacts since creation; never decremented ("has ever touched")
};

struct Listener final : b2ContactListener {
    std::vector<BodyInfo>* bodies = nullptr;
    void Mark(b2Fixture* f, bool begin) {
        auto id = static_cast<size_t>(f->GetBody()->GetUserData().pointer);
        if (id >= bodies->size()) return;
        BodyInfo& info = (*bodies)[id];
        info.touching = begin ? 1 : 0;
        if (begin) info.beginCount++;
    }
    void BeginContact(b2Contact* c) override { Mark(c->GetFixtureA(), true); Mark(c->GetFixtureB(), true); }
    void EndContact(b2Contact* c) override { Mark(c->GetFixtureA(), false); Mark(c->GetFixtureB(), false); }
};

// Member order matters: the b2World is destroyed first, while the listener and flags it might touch still exist.
struct World {
    std::vector<BodyInfo> bodies;
    Listener listener;
    b2World world;
    explicit World(float gx, float gy) : world(b2Vec2(gx, gy)) {
        listener.bodies = &bodies;
        world.SetContactListener(&listener);
    }
};

inline b2Body* Body(World* w, int id) {
    return (w && id >= 0 && static_cast<size_t>(id) < w->bodies.size()) ? w->bodies[id].body : nullptr;
}

int AddFixture(World* w, int id, const b2Shape& shape, float density, float friction, float restitution,
               uint16_t category, uint16_t mask) {
    b2Body* b = Body(w, id);
    if (!b) return -1;
    try {
        b2FixtureDef fd;
        fd.shape = &shape;
        fd.density = density;
        fd.friction = friction;
        fd.restitution = restitution;
        fd.filter.categoryBits = category;
        fd.filter.maskBits = mask;
        b->CreateFixture(&fd);
        return 0;
    } catch (...) {
        return -1;
    }
}

}  // namespace

extern "C" {

// ── WORLD ──
void* mgb2_world_create(float gx, float gy) {
    try { return new World(gx, gy); } catch (...) { return nullptr; }
}

void mgb2_world_destroy(void* w) { delete static_cast<World*>(w); }

void mgb2_world_step(void* w, float dt, int velocityIterations, int positionIterations) {
    if (w) static_cast<World*>(w)->world.Step(dt, velocityIterations, positionIterations);
}

// ── BODIES AND FIXTURES ──
/// Returns the new body's id (0, 1, 2, … in creation order) or -1.
int mgb2_body_create(void* wp, int dynamic, float x, float y, float angle) {
    auto* w = static_cast<World*>(wp);
    if (!w) return -1;
    try {
        b2BodyDef bd;
        bd.type = dynamic ? b2_dynamicBody : b2_staticBody;
        bd.position.Set(x, y);
        bd.angle = angle;
        bd.userData.pointer = w->bodies.size();
        w->bodies.reserve(w->bodies.size() + 1);  // may throw before the body exists, not after
        b2Body* b = w->world.CreateBody(&bd);
        w->bodies.push_back({b, 0, 0});
        return static_cast<int>(w->bodies.size() - 1);
    } catch (...) {
        return -1;
    }
}

/// Convex polygon from n (3..8) vertices given as x0,y0,x1,y1,… in body coordinates.
int mgb2_fixture_polygon(void* w, int body, const float* xy, int n, float density, float friction,
                         float restitution, uint16_t category, uint16_t mask) {
    if (!xy || n < 3 || n > b2_maxPolygonVertices) return -1;
    b2Vec2 pts[b2_maxPolygonVertices];
    for (int i = 0; i < n; i++) pts[i].Set(xy[2 * i], xy[2 * i + 1]);
    b2PolygonShape shape;
    shape.Set(pts, n);
    return AddFixture(static_cast<World*>(w), body, shape, density, friction, restitution, category, mask);
}

/// Axis-aligned box with half-extents (hx, hy) centred on the body origin.
int mgb2_fixture_box(void* w, int body, float hx, float hy, float density, float friction, float restitution,
                     uint16_t category, uint16_t mask) {
    if (!(hx > 0 && hy > 0)) return -1;
    b2PolygonShape shape;
    shape.SetAsBox(hx, hy);
    return AddFixture(static_cast<World*>(w), body, shape, density, friction, restitution, category, mask);
}

/// Two-sided edge segment, which collides from both sides like Box2D 2.3's plain edge.
int mgb2_fixture_edge(void* w, int body, float x1, float y1, float x2, float y2, float density, float friction,
                      float restitution, uint16_t category, uint16_t mask) {
    b2EdgeShape shape;
    shape.SetTwoSided(b2Vec2(x1, y1), b2Vec2(x2, y2));
    return AddFixture(static_cast<World*>(w), body, shape, density, friction, restitution, category, mask);
}

// ── JOINTS ──
/// Revolute joint between two bodies at local anchors; returns 0 or -1.
int mgb2_revolute_joint(void* wp, int bodyA, int bodyB, float ax, float ay, float bx, float by, float referenceAngle,
                        int enableMotor, float motorSpeed, float maxMotorTorque, int enableLimit, float lower,
                        float upper) {
    auto* w = static_cast<World*>(wp);
    b2Body* a = Body(w, bodyA);
    b2Body* b = Body(w, bodyB);
    if (!a || !b) return -1;
    try {
        b2RevoluteJointDef jd;
        jd.bodyA = a;
        jd.bodyB = b;
        jd.localAnchorA.Set(ax, ay);
        jd.localAnchorB.Set(bx, by);
        jd.referenceAngle = referenceAngle;
        jd.enableMotor = enableMotor != 0;
        jd.motorSpeed = motorSpeed;
        jd.maxMotorTorque = maxMotorTorque;
        jd.enableLimit = enableLimit != 0;
        jd.lowerAngle = lower;
        jd.upperAngle = upper;
        return w->world.CreateJoint(&jd) ? 0 : -1;
    } catch (...) {
        return -1;
    }
}

// ── FORCES ──
void mgb2_body_apply_force_center(void* w, int body, float fx, float fy, int wake) {
    if (b2Body* b = Body(static_cast<World*>(w), body)) b->ApplyForceToCenter(b2Vec2(fx, fy), wake != 0);
}

/// Linear impulse (ix, iy) applied at the world point (px, py).
void mgb2_body_apply_impulse(void* w, int body, float ix, float iy, float px, float py, int wake) {
    if (b2Body* b = Body(static_cast<World*>(w), body)) b->ApplyLinearImpulse(b2Vec2(ix, iy), b2Vec2(px, py), wake != 0);
}

/// Overwrites the body's velocities (diagnostics and tests: a kick without going through the engines).
void mgb2_body_set_velocity(void* w, int body, float vx, float vy, float omega) {
    if (b2Body* b = Body(static_cast<World*>(w), body)) {
        b->SetLinearVelocity(b2Vec2(vx, vy));
        b->SetAngularVelocity(omega);
    }
}

// ── STATE ──
struct Mgb2BodyState { float x, y, angle, vx, vy, omega; };

/// Origin position, angle and velocities; all zero for an unknown id.
void mgb2_body_state(void* w, int body, Mgb2BodyState* out) {
    if (!out) return;
    *out = {0, 0, 0, 0, 0, 0};
    if (b2Body* b = Body(static_cast<World*>(w), body)) {
        const b2Vec2& p = b->GetPosition();
        const b2Vec2& v = b->GetLinearVelocity();
        *out = {p.x, p.y, b->GetAngle(), v.x, v.y, b->GetAngularVelocity()};
    }
}

int mgb2_body_awake(void* w, int body) {
    b2Body* b = Body(static_cast<World*>(w), body);
    return b && b->IsAwake() ? 1 : 0;
}

float mgb2_body_mass(void* w, int body) {
    b2Body* b = Body(static_cast<World*>(w), body);
    return b ? b->GetMass() : 0.0f;
}

/// 1 while the last contact event involving this body was a begin (see BodyInfo.touching).
int mgb2_body_touching(void* wp, int body) {
    auto* w = static_cast<World*>(wp);
    return Body(w, body) ? w->bodies[body].touching : 0;
}

/// Number of contacts that began on this body since it was created.
int mgb2_body_begin_count(void* wp, int body) {
    auto* w = static_cast<World*>(wp);
    return Body(w, body) ? w->bodies[body].beginCount : 0;
}

}  // extern "C"
