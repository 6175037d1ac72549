using Akka.Actor;
using MetaGenRL.Core.Engine;

namespace MetaGenRL.Actors.Cluster;

/// <summary>Population coordinator → a worker's <see cref="GroupHostActor"/>: build group <paramref name="Spec"/> of
/// the population that <paramref name="Blueprint"/> describes and run it for <paramref name="Coordinator"/>, with
/// rows to <paramref name="Sink"/> and gradients to <paramref name="Server"/> (null: the population has none).</summary>
/// <param name="Restarted">the group replaces one whose node was lost: it starts as a restarted group does.</param>
/// <param name="GroupsOnHost">how many of the population's groups this host is given: with
/// <see cref="PopulationOptions.TorchThreadsPerGroup"/> 0, each gets this node's cores divided by it.</param>
public sealed record HostGroup(string Blueprint, PopulationOptions Options, GroupSpec Spec, IActorRef Coordinator,
                               IActorRef Sink, IActorRef? Server, bool Restarted, int GroupsOnHost);

/// <summary>Group host → coordinator: group <paramref name="Group"/> could not be built on this node.</summary>
public sealed record GroupHostFailed(int Group, string Reason);

/// <summary>
/// A worker's host for agent groups of populations coordinated elsewhere (at /user/<see cref="Name"/>). It builds each
/// requested group from the population's blueprint (the pipeline's <see cref="Resolve"/>) as a child
/// <see cref="GroupActor"/> on its own pinned thread, which talks to its coordinator directly. It supervises them as
/// the coordinator does its own: a group that faults is restarted (and asks its coordinator for the states to
/// restore), anything else stops it, which its coordinator sees. When a coordinator stops or its node is lost, its
/// groups here are stopped.
/// </summary>
public sealed class GroupHostActor : ReceiveActor
{
    public const string Name = "group-host";

    /// <summary>The group factory of the population a blueprint describes (called once per hosted group; the factory
    /// runs on the group's own thread). Throws with a message naming what is wrong with the blueprint.</summary>
    public delegate Func<GroupSpec, IAgentGroup> Resolve(string blueprint);

    readonly Dictionary<IActorRef, List<IActorRef>> _groupsOf = new();   // coordinator → its groups here
    long _built;

    public static Props Props(Resolve resolve) => Akka.Actor.Props.Create(() => new GroupHostActor(resolve));

    public GroupHostActor(Resolve resolve)
    {
        Receive<HostGroup>(m =>
        {
            Func<GroupSpec, IAgentGroup> factory;
            try { factory = resolve(m.Blueprint); }
            catch (Exception e)
            {
                m.Coordinator.Tell(new GroupHostFailed(m.Spec.Group, $"{Context.System.Name} at {Akka.Cluster.Cluster.Get(Context.System).SelfAddress}: {e.Message}"));
                return;
            }
            // More OpenMP threads than cores makes libgomp stop spin-waiting: this node's cores are split over its groups.
            var options = m.Options.TorchThreadsPerGroup > 0
                ? m.Options
                : m.Options.WithTorchThreads(Math.Max(1, Environment.ProcessorCount / Math.Max(1, m.GroupsOnHost)));
            var group = Context.ActorOf(
                GroupActor.Props(m.Spec, options, factory, m.Sink, m.Server ?? ActorRefs.Nobody, m.Coordinator, m.Restarted),
                $"group-{m.Spec.Group}-{++_built}");
            Context.Watch(group);
            if (!_groupsOf.TryGetValue(m.Coordinator, out var groups))
            {
                _groupsOf[m.Coordinator] = groups = new();
                Context.Watch(m.Coordinator);
            }
            groups.Add(group);
        });
        Receive<Terminated>(t =>
        {
            if (_groupsOf.Remove(t.ActorRef, out var groups))
                foreach (var g in groups) Context.Stop(g);
            else
                foreach (var list in _groupsOf.Values) list.Remove(t.ActorRef);
        });
    }

    protected override SupervisorStrategy SupervisorStrategy() =>
        new OneForOneStrategy(-1, -1, ex => ex is GroupFaultException ? Directive.Restart : Directive.Stop, loggingEnabled: false);
}
